"""Alert mails to the support lead: intake stopped, outbox stuck, mail quarantined.

Each condition has occurrences: from the check that first finds it until the check that finds
it cleared. An occurrence gets one alert mail when it starts and one recovery mail when it
clears, both outbox rows with unique purposes::

    alert:<condition>:<start, YYYYMMDDTHHMMSSZ>            the alert
    alert:<condition>:<start, YYYYMMDDTHHMMSSZ>:recovered  its recovery

The outbox is the state: the newest ``alert:<condition>:`` purpose tells whether an
occurrence is open, so a restart neither repeats an alert nor forgets a recovery. A condition
that cannot be judged (the store is away, an IMAP mailbox not yet connected after start)
neither starts nor ends an occurrence.
"""

from __future__ import annotations

import email.utils
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Final

from sqlalchemy.exc import IntegrityError

from mailbot import metrics
from mailbot.config import Config
from mailbot.domain import LOOP_HEADER, other_message_id
from mailbot.health import Report, age_text
from mailbot.replies.conversation import ConversationRenderError
from mailbot.replies.layout import template_environments
from mailbot.replies.mime import POLICY, outgoing, valid_address
from mailbot.replies.sanitize import clean_header_text
from mailbot.store import Store

log = logging.getLogger(__name__)

CONDITIONS: Final = ("intake_stopped", "outbox_stuck", "quarantine")
_SUBJECTS: Final = {
    ("intake_stopped", "cs"): "Příjem pošty se zastavil",
    ("intake_stopped", "en"): "Mail intake has stopped",
    ("outbox_stuck", "cs"): "Odchozí pošta vázne",
    ("outbox_stuck", "en"): "Outgoing mail is stuck",
    ("quarantine", "cs"): "Pošta v karanténě",
    ("quarantine", "en"): "Mail in quarantine",
}


@dataclass(frozen=True, slots=True)
class Condition:
    """A condition as judged by one check: `active` None when it cannot be judged."""

    name: str
    active: bool | None
    detail: str = ""


def _stamp(t: datetime) -> str:
    return t.strftime("%Y%m%dT%H%M%SZ")


class Alerts:
    """Judges the conditions from a readiness `Report` and queues alert and recovery mails.
    Not thread-safe: one caller (the daemon's monitor loop)."""

    def __init__(self, config: Config, store: Store) -> None:
        self.config = config
        self.store = store
        sched = config.schedule
        self.recipients = ((sched.lead_address,) if sched.lead_address
                           else tuple(config.mailbox.staff_notify))
        if not self.recipients:
            log.warning("alerts.enabled, but neither schedule.lead_address nor "
                        "mailbox.staff_notify is set: no alert mails")
        self._env, _ = template_environments(config.path(config.replies.templates_dir))
        for lang in ("cs", "en"):
            self._env.get_template(f"staff/alert.{lang}.txt.j2")
        # The open occurrence of each condition (its alert purpose), read from the outbox.
        self._open: dict[str, str | None] | None = None

    def forget(self) -> None:
        """Read the open occurrences from the outbox again at the next `run` (another daemon
        may have queued alerts meanwhile, e.g. while it held the scheduler lease)."""
        self._open = None

    def conditions(self, report: Report) -> list[Condition]:
        """The three conditions as `report` shows them."""
        a, now = self.config.alerts, report.at
        out: list[Condition] = []
        # Intake: the listener refuses, or a mailbox has had no completed cycle for too long.
        limit = timedelta(minutes=a.intake_stopped_minutes)
        states: list[bool | None] = []
        details: list[str] = []
        if report.listener_refused is not None:
            states.append(report.listener_refused)
            if report.listener_refused:
                details.append("the SMTP/LMTP listener refuses connections")
        for name, silent in report.imap_silent.items():
            if silent is None:  # another daemon polls it
                states.append(False)
            elif silent > limit:
                states.append(True)
                details.append(f"IMAP {name}: no successful cycle for {age_text(silent)}")
            else:  # connected and recent: fine; not connected: cannot tell before the limit
                states.append(False if report.imap_connected.get(name) else None)
        out.append(Condition("intake_stopped", _any(states), "; ".join(details)))
        if not report.store_ok:
            out.append(Condition("outbox_stuck", None))
            out.append(Condition("quarantine", None))
            return out
        oldest = report.outbox_oldest_due
        stuck = oldest is not None and now - oldest > timedelta(minutes=a.outbox_stuck_minutes)
        out.append(Condition(
            "outbox_stuck", stuck,
            f"the oldest due mail has waited {age_text(now - oldest)}"
            if stuck and oldest is not None else ""))
        if a.quarantine:
            n = report.quarantined or 0
            out.append(Condition("quarantine", n > 0,
                                 f"{n} message(s) in quarantine" if n else ""))
        return out

    def run(self, report: Report) -> list[str]:
        """Queue the alert and recovery mails `report` calls for; returns their purposes."""
        if not self.recipients:
            return []
        if self._open is None:
            self._open = {name: self._read_open(name) for name in CONDITIONS}
        queued: list[str] = []
        for cond in self.conditions(report):
            open_purpose = self._open.get(cond.name)
            if cond.active and open_purpose is None:
                purpose = f"alert:{cond.name}:{_stamp(report.at)}"
                if self._queue(purpose, cond, recovered=False, now=report.at):
                    queued.append(purpose)
                    metrics.ALERTS.labels(cond.name, "alert").inc()
                self._open[cond.name] = purpose
            elif cond.active is False and open_purpose is not None:
                purpose = f"{open_purpose}:recovered"
                if self._queue(purpose, cond, recovered=True, now=report.at):
                    queued.append(purpose)
                    metrics.ALERTS.labels(cond.name, "recovered").inc()
                self._open[cond.name] = None
        if queued:
            log.warning("alerts queued: %s", ", ".join(queued))
        return queued

    def _read_open(self, name: str) -> str | None:
        newest = self.store.purposes_with_prefix(f"alert:{name}:", limit=1)
        if not newest or newest[0].endswith(":recovered"):
            return None
        return newest[0]

    def _queue(self, purpose: str, cond: Condition, *, recovered: bool, now: datetime) -> bool:
        """Queue one mail under `purpose`; False when it was queued before."""
        box = self.config.mailbox
        lang = self.config.conversation.staff_language
        start = purpose.split(":")[2]
        body = self._env.get_template(f"staff/alert.{lang}.txt.j2").render(
            condition=cond.name, recovered=recovered, detail=clean_header_text(cond.detail, 500),
            since=_when(start), now=now.strftime("%Y-%m-%d %H:%M UTC"))
        msg = EmailMessage(policy=POLICY)
        msg["From"] = Address(clean_header_text(box.support_name, 100),
                              addr_spec=box.support_address)
        to = tuple(a for a in (valid_address(r) for r in self.recipients) if a)
        msg["To"] = ", ".join(to)
        word = ({"cs": "VYŘEŠENO", "en": "RESOLVED"} if recovered
                else {"cs": "UPOZORNĚNÍ", "en": "ALERT"})[lang]
        msg["Subject"] = f"mailbot {word}: {_SUBJECTS[(cond.name, lang)]}"
        msg["Date"] = email.utils.format_datetime(now)
        token = f"alert-{cond.name}-{start}" + ("-ok" if recovered else "")
        message_id = other_message_id(token.replace("_", "-").lower(), box.message_id_domain)
        msg["Message-ID"] = message_id
        msg[LOOP_HEADER] = box.support_address
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(body, cte="quoted-printable")
        mail = outgoing(msg, to, purpose=purpose, kind="alert", message_id=message_id,
                        mail_from=box.support_address, error=ConversationRenderError)
        try:
            with self.store.transaction() as tx:
                return tx.enqueue(mail, ticket_id=None, inbound_id=None, now=now)
        except IntegrityError:  # queued by another daemon at the same moment
            return False


def _any(states: list[bool | None]) -> bool | None:
    """True if any is True, False if all are False (or none), else None (unknown)."""
    if any(s is True for s in states):
        return True
    if all(s is False for s in states):
        return False
    return None


def _when(stamp: str) -> str:
    t = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ")
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")
