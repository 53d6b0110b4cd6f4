"""News mailings: campaign files, their audience, and one outbox row per recipient.

A campaign is `templates/news/<name>.md`: TOML front matter between ``+++`` lines
(``subject_cs``, ``subject_en``, ``audience``), then the Czech body in Markdown, then
optionally ``<!-- en -->`` and the English body. Bodies may use ``{{ name }}``,
``{{ license }}``, ``{{ tier }}`` and ``{{ support_end }}`` (a sandboxed Jinja2 template
written by staff, never by customers). Markdown becomes HTML with `markdown`, sanitised
by `nh3`.

Exactly once: each recipient's mail is an outbox row whose unique purpose is
``news:<campaign>:<address>`` (`news_purpose`), written before anything is sent; sending it
again only queues the rows that are missing.

Recurring campaigns (`news schedule NAME --cron EXPR`) are sent as *runs*: the run of the
occurrence at 8:00 on 1 December 2026 (business time zone) has the campaign id
``NAME@20261201T0800`` (`run_id`), so each run reaches each recipient once.
"""

from __future__ import annotations

import re
from html import escape as html_escape
import secrets
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

import nh3
from cronsim import CronSim, CronSimError
from jinja2 import StrictUndefined, Template, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

from mailbot.classify.entitlement import PRAGUE, entitlement_at
from mailbot.config import Config
from mailbot.contacts import Contact
from mailbot.domain import LOOP_HEADER, LicenseRecord, OutgoingMail, other_message_id
from mailbot.errors import ConfigError
from mailbot.replies.conversation import ConversationRenderError
from mailbot.replies.language import choose_language, format_date
from mailbot.replies.mime import (
    HeaderError,
    address_header,
    date_header,
    id_header,
    mail_bytes,
    plain_header,
    sealed,
    text_header,
    valid_address,
)
from mailbot.replies.sanitize import clean_header_text
from mailbot.store import Store, bounded_purpose
from mailbot.unsubscribe_token import new_token, token_address

AUDIENCES = ("supported", "start", "expired_90", "all")
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,60}")
_SPLIT = re.compile(r"^<!--\s*en\s*-->\s*$", re.M)


def news_purpose(campaign_id: str, address: str) -> str:
    """The outbox purpose of a campaign's (or a run's) mail to `address`:
    ``news:<id>:<address>``, hashed where too long (see `bounded_purpose`)."""
    return bounded_purpose(f"news:{campaign_id}", address)


# --- recurring campaigns (cron expressions in the business time zone) -----------------------


def check_cron(expr: str) -> str:
    """`expr` normalised (single spaces), if it is a five-field cron expression.

    Raises:
        ConfigError: not five fields, or a field cronsim rejects (named in the message).
    """
    fields = expr.split()
    if len(fields) != 5:
        raise ConfigError(f"cron expression {expr!r}: expected 5 fields "
                          f"(minute hour day-of-month month day-of-week), got {len(fields)}")
    normal = " ".join(fields)
    if len(normal) > 100:
        raise ConfigError(f"cron expression {expr!r}: longer than 100 characters")
    try:
        CronSim(normal, datetime.now(UTC))
    except CronSimError as exc:
        raise ConfigError(f"cron expression {expr!r}: {exc}") from None
    return normal


def next_run(expr: str, after: datetime, zone: tzinfo) -> datetime:
    """The first occurrence of `expr` (in `zone`) strictly after `after`, in UTC."""
    return next(CronSim(expr, after.astimezone(zone))).astimezone(UTC)


def latest_run(expr: str, now: datetime, zone: tzinfo) -> datetime:
    """The last occurrence of `expr` (in `zone`) at or before `now`, in `zone`."""
    start = now.astimezone(zone).replace(microsecond=0) + timedelta(seconds=1)
    return next(CronSim(expr, start, reverse=True))  # reverse: strictly before `start`


def run_id(name: str, occurrence: datetime, zone: tzinfo) -> str:
    """The campaign id of the run at `occurrence`: ``NAME@YYYYMMDDTHHMM`` (local time)."""
    return f"{name}@{occurrence.astimezone(zone):%Y%m%dT%H%M}"


@dataclass(frozen=True, slots=True)
class Campaign:
    name: str
    subjects: dict[str, str]
    bodies: dict[str, str]
    audience: str


def load_campaign(directory: Path, name: str) -> Campaign:
    """Read and check `directory/<name>.md`.

    Raises:
        ConfigError: no such campaign, or a bad front matter key (named in the message).
    """
    if not _NAME.fullmatch(name):
        raise ConfigError(f"campaign name {name!r}: use lower-case letters, digits, - and _")
    path = directory / f"{name}.md"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"campaign {name}: cannot read {path}: {exc.strerror}") from None
    parts = text.split("+++", 2)
    if len(parts) != 3 or parts[0].strip():
        raise ConfigError(f"{path}: expected front matter between +++ lines")
    try:
        meta: dict[str, Any] = tomllib.loads(parts[1])
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: front matter is not valid TOML: {exc}") from None
    unknown = set(meta) - {"subject_cs", "subject_en", "audience"}
    if unknown:
        raise ConfigError(f"{path}: {sorted(unknown)[0]}: unknown key")
    if not isinstance(meta.get("subject_cs"), str) or not meta["subject_cs"].strip():
        raise ConfigError(f"{path}: subject_cs: required")
    audience = meta.get("audience", "supported")
    if audience not in AUDIENCES:
        raise ConfigError(f"{path}: audience: expected one of {', '.join(AUDIENCES)}, got {audience!r}")
    pieces = _SPLIT.split(parts[2], maxsplit=1)
    cs, en = pieces[0], (pieces[1] if len(pieces) > 1 else "")
    subjects = {"cs": meta["subject_cs"], "en": str(meta.get("subject_en") or meta["subject_cs"])}
    bodies = {"cs": cs.strip(), "en": (en or cs).strip()}
    for lang, body in bodies.items():  # fail when scheduled, not when due
        check_template(f"{path}: body {lang}", body)
    return Campaign(name, subjects, bodies, audience)


def check_template(label: str, body: str) -> None:
    """Raises ConfigError naming `label` and the line when `body` is not valid Jinja2."""
    try:
        SandboxedEnvironment().parse(body)
    except TemplateSyntaxError as exc:
        raise ConfigError(f"{label}: line {exc.lineno}: {exc.message}") from None


def audience(campaign: Campaign, contacts: Sequence[Contact],
             registry: dict[str, LicenseRecord], suppressed: set[str], now: datetime
             ) -> Iterator[tuple[Contact, LicenseRecord]]:
    """The contacts a campaign goes to: by entitlement at `now`, never a suppressed address."""
    for contact in contacts:
        record = registry.get(contact.license)
        if record is None or contact.email.lower() in suppressed:
            continue
        valid, ends_on = entitlement_at(record, now)
        if campaign.audience == "all":
            yield contact, record
        elif campaign.audience == "supported" and valid:
            yield contact, record
        elif campaign.audience == "start" and valid and record.tier.value == "START":
            yield contact, record
        elif campaign.audience == "expired_90" and not valid and ends_on is not None:
            if 0 <= (now.astimezone(PRAGUE).date() - ends_on).days <= 90:
                yield contact, record


class NewsRenderer:
    """Renders a campaign for one recipient (text and sanitised HTML, bulk-mail headers)."""

    def __init__(self, config: Config) -> None:
        self._box = config.mailbox
        self._news = config.news
        self._default_language = config.replies.default_language
        self._env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
        self._compiled: dict[str, Template] = {}  # campaign body → its template, compiled once
        self._converter: Any = None
        # The same in every letter: composed once (as the reply renderers do).
        try:
            self._from = address_header("From", ((clean_header_text(self._news.from_name, 100),
                                                  self._box.support_address),))
            self._list_id = plain_header("List-Id", f"<{self._news.list_id}>")
            self._fixed = "".join((
                plain_header("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")  # RFC 8058
                if self._news.base_url else "",
                plain_header("Precedence", "bulk"),
                plain_header("Auto-Submitted", "auto-generated"),
                plain_header(LOOP_HEADER, self._box.support_address)))
        except HeaderError as exc:
            raise ConfigError(f"news headers: {exc}") from None

    def _markdown(self) -> Any:
        """The renderer's Markdown converter, made once (building its parser costs as much
        as converting a campaign's text) and reset before each use."""
        if self._converter is None:
            import markdown  # campaigns only: not loaded by a daemon that sends none

            self._converter = markdown.Markdown()
        return self._converter

    def _template(self, body: str) -> Template:
        template = self._compiled.get(body)
        if template is None:
            template = self._compiled[body] = self._env.from_string(body)
        return template

    def render(self, campaign: Campaign, contact: Contact, record: LicenseRecord,
               token: str, now: datetime, purpose: str) -> OutgoingMail | None:
        """The campaign's mail to `contact` as the outbox row `purpose` (kind "news", bulk),
        or None for an invalid address."""
        to = valid_address(contact.email)
        if to is None:
            return None
        lang = choose_language(contact.language, self._default_language)
        _, ends_on = entitlement_at(record, now)
        values = {"name": contact.name, "license": record.license, "tier": record.tier.value,
                  "support_end": format_date(ends_on, lang) if ends_on else ""}
        template = self._template(campaign.bodies[lang])
        source = template.render(values)
        # The HTML gets the values escaped (a contact's name is data, not markup), then
        # Markdown, then the sanitiser (the campaign's own markup is staff-written).
        escaped = template.render({k: html_escape(v) for k, v in values.items()})
        html = nh3.clean(self._markdown().reset().convert(escaped))
        run = campaign.name.replace("@", "-")  # a run's id (NAME@…) in a Message-ID
        # A random id, not the token: Message-IDs are logged and quoted in bounces. Bounces
        # find the recipient by the outbox row of this Message-ID.
        message_id = other_message_id(f"news-{run}-{secrets.token_hex(10)}",
                                      self._box.message_id_domain)
        mailto = f"mailto:{token_address(self._box.unsubscribe_address, token)}"
        links = [f"<{mailto}>"]
        if self._news.base_url:
            links.append(f"<{self._news.base_url.rstrip('/')}/unsubscribe/{token}>")
        try:
            headers = [
                self._from,
                address_header("To", ((clean_header_text(contact.name, 100), to),)),
                text_header("Subject", clean_header_text(campaign.subjects[lang], 250)),
                date_header(now),
                id_header("Message-ID", (message_id,)),
                self._list_id,
                plain_header("List-Unsubscribe", ", ".join(links)),
                self._fixed,
            ]
            raw = mail_bytes(headers, source, f"<!DOCTYPE html><html lang=\"{lang}\"><body>"
                                              f"{html}</body></html>")
        except HeaderError as exc:
            raise ConversationRenderError(str(exc)) from exc
        return sealed(raw, (contact.email,), purpose=purpose, kind="news",
                      message_id=message_id, mail_from=self._box.support_address, bulk=True)


def recipients(store: Store, campaign: Campaign, now: datetime
               ) -> list[tuple[Contact, LicenseRecord]]:
    """The campaign's audience at `now` from the stored registry, contacts and suppressions."""
    suppressed = {a for a, _, _ in store.suppressed()}
    return list(audience(campaign, store.contacts(), store.license_snapshot(), suppressed, now))


def queue_campaign(store: Store, config: Config, campaign: Campaign, now: datetime,
                   progress: Callable[[int, int], None] = lambda done, total: None) -> int:
    """Queue the campaign's mail for every recipient not queued before; returns how many
    were queued now. Rows are written in batches, each with its unsubscribe tokens."""
    renderer = NewsRenderer(config)
    people = recipients(store, campaign, now)
    purposes = {c.email: news_purpose(campaign.name, c.email) for c, _ in people}
    done = store.existing_purposes(list(purposes.values()))
    todo = [(c, r) for c, r in people if purposes[c.email] not in done]
    rate = config.news.rate_per_minute
    queued = 0
    for start in range(0, len(todo), 500):
        batch = []
        for i, (contact, record) in enumerate(todo[start : start + 500], start):
            token = new_token()
            made = renderer.render(campaign, contact, record, token, now, purposes[contact.email])
            if made is None:
                continue
            due = now + timedelta(seconds=60 * i / rate) if rate else now
            batch.append((token, contact.email, made, due))
        with store.transaction() as tx:
            for token, address, out, due in batch:
                if tx.enqueue(out, ticket_id=None, inbound_id=None, due=due, now=now):
                    tx.add_news_token(token, address, campaign.name, now)
                    queued += 1
        progress(min(start + 500, len(todo)), len(todo))
    return queued


# --- writing a new campaign file (`mailbot news create`) ----------------------------------

_TOML_ESCAPES = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\t": "\\t", "\n": "\\n",
                 "\f": "\\f", "\r": "\\r"}
SKELETON_CS = """Dobrý den{% if name %}, {{ name }}{% endif %},

sem napište text sdělení.

Týká se licence {{ license }}{% if support_end %} (podpora do {{ support_end }}){% endif %}.

S pozdravem
tým podpory"""
SKELETON_EN = """Hello{% if name %} {{ name }}{% endif %},

write the text of the announcement here.

This concerns license {{ license }}{% if support_end %} (support until {{ support_end }}){% endif %}.

Kind regards
the support team"""


def toml_string(value: str) -> str:
    """`value` as a TOML basic string (quoted, with escapes). A ``+++`` inside would end the
    front matter, so then every ``+`` is written as ``\\u002B``."""
    out = []
    for ch in value:
        if ch in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    text = "".join(out)
    if "+++" in text:
        text = text.replace("+", "\\u002B")
    return f'"{text}"'


def campaign_source(subject_cs: str, subject_en: str | None, audience: str, body_cs: str,
                    body_en: str | None) -> str:
    """The text of a campaign file: front matter, Czech body, then the English one if any."""
    meta = [f"subject_cs = {toml_string(subject_cs)}"]
    if subject_en:
        meta.append(f"subject_en = {toml_string(subject_en)}")
    meta.append(f"audience = {toml_string(audience)}")
    text = "+++\n" + "\n".join(meta) + "\n+++\n" + body_cs.strip() + "\n"
    if body_en is not None and body_en.strip():
        text += "<!-- en -->\n" + body_en.strip() + "\n"
    return text


def create_campaign(directory: Path, name: str, subject_cs: str, subject_en: str | None = None,
                    audience: str = "supported", body_cs: str | None = None,
                    body_en: str | None = None) -> Path:
    """Write `directory/<name>.md` (never over an existing file) and check it loads; without
    bodies, a Czech and English skeleton. Returns the path.

    Raises:
        ConfigError: a bad name, audience, subject or body, or the file exists already.
    """
    if not _NAME.fullmatch(name):
        raise ConfigError(f"campaign name {name!r}: use lower-case letters, digits, - and _")
    if audience not in AUDIENCES:
        raise ConfigError(f"audience: expected one of {', '.join(AUDIENCES)}, got {audience!r}")
    if not subject_cs.strip():
        raise ConfigError("subject_cs: required")
    if body_cs is None:  # a skeleton to edit (English too, unless given)
        body_cs = SKELETON_CS
        body_en = SKELETON_EN if body_en is None else body_en
    for lang, body in (("cs", body_cs), ("en", body_en)):
        if body is not None and _SPLIT.search(body):
            raise ConfigError(f"body {lang}: must not contain the <!-- en --> separator")
        if body is not None:
            check_template(f"body {lang}", body)
    path = directory / f"{name}.md"
    text = campaign_source(subject_cs, subject_en, audience, body_cs, body_en)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        with path.open("x", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError:
        raise ConfigError(f"campaign {name}: {path} exists already (not overwritten)") from None
    try:
        load_campaign(directory, name)
    except ConfigError:
        path.unlink()
        raise
    return path
