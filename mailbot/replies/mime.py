"""Building MIME messages and checking the bytes mailbot sends (pure).

Every outgoing mail is serialized once, by `checked_bytes`, which re-parses the bytes to prove
they have exactly the headers that were set and exactly the intended recipients in To
(CPython 3.11.7 predates the generator fixes for CVE-2024-6923 and CVE-2026-0672), and
becomes one `OutgoingMail` (`outgoing`), the type the outbox takes.
"""

from __future__ import annotations

import email
import email.headerregistry
import email.parser
import email.policy
import email.quoprimime
import email.utils
import re
from collections.abc import Mapping, Sequence
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Any, Final

from email_validator import EmailNotValidError, validate_email

from mailbot.domain import LOOP_HEADER, OutgoingMail
from mailbot.errors import ConfigError
from mailbot.replies.sanitize import clean_header_text

__all__ = [
    "POLICY",
    "checked_bytes",
    "clean_message_id",
    "message_ids",
    "outgoing",
    "set_bodies",
    "valid_address",
    "valid_message_id",
]

POLICY: Final = email.policy.SMTP
MSG_ID: Final = re.compile(r"<[!-;=?-~]{1,250}>")  # printable ASCII except < and >, no spaces
_BARE_MSG_ID = re.compile(r"[!-;=?-~]{1,248}@[!-;=?-~]{1,248}")


def valid_address(value: str | None) -> str | None:
    """`value` as an ASCII address mailbot may send to, else None: accepted by
    email-validator (no deliverability check: the relay judges that; *.test allowed for test
    rigs; no SMTPUTF8, which mailbot does not send) and holding no encoded word, which the
    `email` package would decode in a header."""
    if not value or len(value) > 320:
        return None
    try:
        valid = validate_email(value, check_deliverability=False, allow_smtputf8=False,
                               test_environment=True)
    except EmailNotValidError:
        return None
    if valid.ascii_email is None or "=?" in valid.ascii_email:
        return None
    return valid.ascii_email



def clean_message_id(value: str | None) -> str | None:
    """`value` as a well-formed ``<id>`` (angle brackets added to a bare ``a@b``), else None."""
    if not value:
        return None
    cleaned = clean_header_text(value, 1000).strip()
    if MSG_ID.fullmatch(cleaned):
        return cleaned
    if _BARE_MSG_ID.fullmatch(cleaned):
        return f"<{cleaned}>"
    return None


# -- header objects and the serialization policy ------------------------------------------

# Boundary of the multipart/alternative: both parts are quoted-printable, whose output never
# holds "==" ("=" always starts "=XX" or a soft line break), so it cannot occur in a part.
# Constant, so that the generator and the re-check do not compile a fresh regex per reply.
BOUNDARY: Final = "===============mailbot-alternative=="
PART_HEADERS: Final = ("Content-Type", "Content-Transfer-Encoding")


class _HeaderRegistry(email.headerregistry.HeaderRegistry):
    """The stdlib header registry, building each header class once per name rather than
    once per header (its ``__getitem__`` creates a new class on every call)."""

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type] = {}

    def map_to_type(self, name: str, cls: type) -> None:
        super().map_to_type(name, cls)
        self._classes.clear()

    def __getitem__(self, name: str) -> type:
        key = name.lower()
        cls = self._classes.get(key)
        if cls is None:
            cls = self._classes[key] = super().__getitem__(name)
        return cls


class _ReplyPolicy(email.policy.EmailPolicy):
    """``email.policy.SMTP`` that serializes the renderer's constant header objects from a
    memo of their fold (computed by this policy class itself, for the same settings)."""

    constant_folds: Mapping[int, tuple[Any, tuple[Any, ...], bytes]] = {}

    def _fold_settings(self) -> tuple[Any, ...]:
        return (self.linesep, self.max_line_length, self.utf8, self.cte_type, self.refold_source)

    def fold_binary(self, name: str, value: Any) -> bytes:
        entry = self.constant_folds.get(id(value))
        if entry is not None and entry[0] is value and entry[1] == (name, *self._fold_settings()):
            return entry[2]
        return super().fold_binary(name, value)


def reply_headers(
    support_name: str, support_address: str, langs: Sequence[str]
) -> tuple[_ReplyPolicy, dict[str, Any], dict[str, Any]]:
    """The policy, the header objects every reply carries, and Content-Language per language.

    Every header object comes from the policy's header factory, as ``msg[name] = value``
    would make it; assigning such an object stores it without parsing it again.
    """
    # The settings of email.policy.SMTP.
    base = _ReplyPolicy(linesep="\r\n", header_factory=_HeaderRegistry())
    make = base.header_factory
    headers: dict[str, Any] = {
        "From": make("From", Address(display_name=support_name, addr_spec=support_address)),
        "Auto-Submitted": make("Auto-Submitted", "auto-replied"),
        "X-Auto-Response-Suppress": make("X-Auto-Response-Suppress", "All"),
        LOOP_HEADER: make(LOOP_HEADER, support_address),
        "MIME-Version": make("MIME-Version", "1.0"),
        "Content-Type": make("Content-Type", f'multipart/alternative; boundary="{BOUNDARY}"'),
    }
    for subtype in ("plain", "html"):
        headers[f"text/{subtype} Content-Type"] = make(
            "Content-Type", f'text/{subtype}; charset="utf-8"'
        )
        headers[f"text/{subtype} Content-Transfer-Encoding"] = make(
            "Content-Transfer-Encoding", "quoted-printable"
        )
    languages = {lang: make("Content-Language", lang) for lang in langs}
    for header in (*headers.values(), *languages.values()):
        if header.defects:
            raise ConfigError(f"reply header {header.name}: {header.defects[0]}")
    folds = {
        id(header): (
            header,
            (header.name, *base._fold_settings()),
            base.fold_binary(header.name, header),
        )
        for header in (*headers.values(), *languages.values())
    }
    return base.clone(constant_folds=folds), headers, languages  # type: ignore[call-arg]


def quoted_printable(body: str, policy: email.policy.EmailPolicy) -> str:
    """`body` in UTF-8 quoted-printable, exactly as ``set_content(cte="quoted-printable")``."""
    lines = body.encode("utf-8").splitlines()
    normal = b"\n".join(lines) + b"\n"
    width = policy.max_line_length  # 78 in the reply policy; set_content passes it alike
    return email.quoprimime.body_encode(normal.decode("latin-1"), width)  # type: ignore[arg-type]


def checked_bytes(msg: EmailMessage, recipients: Sequence[str], *,
                  error: type[Exception], alternatives: bool = False) -> bytes:
    """Serialize, then re-parse the bytes we would send: the same header names and exactly
    `recipients` in To (with `alternatives`, also a two-part multipart/alternative).

    Returns the bytes, so the message is serialized once. The re-parse uses compat32, which
    splits headers exactly like any receiving MTA would and is ~3x cheaper than re-building
    header objects.

    Raises:
        `error`: the message does not serialize, or the re-parse differs (a header-injection
            symptom).
    """
    try:
        raw = msg.as_bytes()
    except (ValueError, UnicodeError) as exc:
        raise error(f"message does not serialize: {exc}") from exc
    head = raw.split(b"\r\n\r\n", 1)[0]
    if b"\r\n" not in raw or any(b"\r" in line or b"\n" in line for line in head.split(b"\r\n")):
        raise error("header section has a bare CR or LF")
    parsed = _COMPAT_PARSER.parsebytes(raw, headersonly=not alternatives)
    expected = sorted(k.lower() for k in msg.keys())
    got = sorted(k.lower() for k in parsed.keys())
    if got != expected:
        raise error(f"headers changed in serialization: {got} != {expected}")
    addresses = {a.lower() for _, a in email.utils.getaddresses(
        [str(v) for v in parsed.get_all("to", [])])}
    if addresses != {r.lower() for r in recipients}:
        raise error(f"recipients changed in serialization: {addresses}")
    if alternatives and (parsed.get_content_type() != "multipart/alternative"
                         or len(parsed.get_payload()) != 2):
        raise error("not a two-part multipart/alternative")
    return raw


_COMPAT_PARSER = email.parser.BytesParser(policy=email.policy.compat32)


def valid_message_id(value: str) -> bool:
    """Whether `value` is a well-formed ``<id>`` mailbot may write into a header as it is."""
    v = value.strip()
    return (v.startswith("<") and v.endswith(">") and len(v) < 250 and " " not in v
            and all(" " < ch < "\x7f" for ch in v)
            and "=?" not in v)  # the email package would decode an encoded word in it


def message_ids(*values: str | None) -> list[str]:
    """The values that are well-formed Message-IDs, stripped, in order, once each."""
    return list(dict.fromkeys(v.strip() for v in values if v and valid_message_id(v)))


def set_bodies(msg: EmailMessage, text: str, html: str | None = None) -> None:
    """The text body (and an HTML alternative), UTF-8 quoted-printable."""
    msg.set_content(text, cte="quoted-printable")
    if html is not None:
        msg.add_alternative(html, subtype="html", cte="quoted-printable")


def outgoing(msg: EmailMessage, recipients: Sequence[str], *, purpose: str, kind: str,
             message_id: str, mail_from: str, error: type[Exception],
             rcpt_to: Sequence[str] | None = None, alternatives: bool = False,
             auto: bool = False, bulk: bool = False) -> OutgoingMail:
    """`msg` serialized and checked (`checked_bytes` against `recipients`) as the outbox
    takes it; `rcpt_to` is the envelope when it is not `recipients` as written."""
    raw = checked_bytes(msg, recipients, error=error, alternatives=alternatives)
    return OutgoingMail(purpose=purpose, message_id=message_id, kind=kind,
                        mail_from=mail_from, rcpt_to=tuple(rcpt_to or recipients), raw=raw,
                        auto=auto, bulk=bulk)
