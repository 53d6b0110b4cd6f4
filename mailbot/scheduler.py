"""Timed work: deadline reminders and escalations, waiting tickets, the daily digest, notices
before HOTLINE START ends.

`Scheduler.run_due(now)` looks at the store and queues what is due at `now`; the daemon calls
it every `schedule.tick_seconds`, tests call it with any clock. Every job is an outbox row
whose `purpose` names the job and its occasion (ticket and deadline, ticket and start of the
wait, day of the digest): the unique key makes a job happen at most once, and a job that fell
due while the daemon was down is simply due at the first tick after start.

Retention (`[retention]`, see `mailbot.retention`) runs at a tick every `interval_minutes`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from sqlalchemy.exc import IntegrityError

from mailbot.business_hours import BusinessCalendar
from mailbot.config import Config
from mailbot.errors import ConfigError
from mailbot.classify.entitlement import support_end
from mailbot.domain import (
    LicenseRecord,
    OutgoingMail,
    TicketInfo,
    Tier,
    other_message_id,
    ticket_message_id,
)
from mailbot.replies.conversation import ConversationRenderer
from mailbot.replies.mime import valid_address
from mailbot.retention import PurgeReport, purge
from mailbot.contacts import Contact
from mailbot.store import Store, bounded_purpose

log = logging.getLogger(__name__)


def _stamp(t: datetime) -> int:
    """Whole minutes since the epoch: names an occasion in purposes and Message-IDs."""
    return int(t.timestamp() // 60)


@dataclass(frozen=True, slots=True)
class Job:
    """One thing to do for a ticket at `due`."""

    purpose: str
    kind: str  # reminder, escalation, wait_reminder, wait_closed
    ticket: TicketInfo
    due: datetime


DigestBuilder = Callable[[list[TicketInfo], datetime, date], OutgoingMail | None]
"""(open tickets, now, day) → the day's digest mail, or None for no digest."""


class Scheduler:
    """Plans and queues the timed mails; construct once per daemon."""

    def __init__(self, config: Config, store: Store, renderer: ConversationRenderer,
                 digest: DigestBuilder | None = None) -> None:
        self.config = config
        self.store = store
        self.renderer = renderer
        self.calendar = BusinessCalendar(config.calendar)
        self.digest = digest
        self.sender = config.mailbox.support_address
        self._digest_skipped: date | None = None  # the day whose digest had nothing to say
        self._retention_due: datetime | None = None  # the first tick runs it

    # --- planning (no writes) --------------------------------------------------------

    def jobs(self, tickets: list[TicketInfo], now: datetime) -> list[Job]:
        """The jobs due at `now` for these tickets (whether done already is not checked)."""
        sched, cal = self.config.schedule, self.calendar
        due: list[Job] = []
        for t in tickets:
            if t.state == "open":
                key = f"{t.number}:{_stamp(t.deadline)}"
                if now >= t.deadline:
                    due.append(Job(f"escalation:{key}", "escalation", t, t.deadline))
                else:
                    remind_at = cal.subtract_working_hours(t.deadline, sched.reminder_hours)
                    if now >= remind_at:
                        due.append(Job(f"reminder:{key}", "reminder", t, remind_at))
            elif t.state == "waiting" and t.waiting_since is not None:
                key = f"{t.number}:{_stamp(t.waiting_since)}"
                day = cal.hours_per_day
                remind_at = cal.add_working_hours(t.waiting_since, sched.wait_reminder_days * day)
                close_at = cal.add_working_hours(remind_at, sched.wait_close_days * day)
                if now >= close_at:
                    due.append(Job(f"wait-closed:{key}", "wait_closed", t, close_at))
                elif now >= remind_at:
                    due.append(Job(f"wait-reminder:{key}", "wait_reminder", t, remind_at))
        return due

    def digest_due(self, now: datetime) -> date | None:
        """Today (local), if today's digest time has come on a working day."""
        sched = self.config.schedule
        local = now.astimezone(self.calendar.zone)
        if not sched.digest or not self.calendar.is_working_day(local.date()):
            return None
        return local.date() if local.time() >= time.fromisoformat(sched.digest_time) else None

    # --- doing -----------------------------------------------------------------------

    def run_due(self, now: datetime) -> list[str]:
        """Queue everything due at `now` that was not queued before; returns the purposes."""
        tickets = self.store.list_tickets(states=("open", "waiting"), limit=1_000_000)
        jobs = self.jobs(tickets, now)
        day = self.digest_due(now)
        wanted = [j.purpose for j in jobs] + ([f"digest:{day}"] if day else [])
        done = self.store.existing_purposes(wanted) if wanted else set()
        queued: list[str] = []
        for job in jobs:
            if job.purpose not in done and self._run(job, now):
                queued.append(job.purpose)
        if (day is not None and day != self._digest_skipped and f"digest:{day}" not in done
                and self._digest(tickets, now, day)):
            queued.append(f"digest:{day}")
        queued += self._license_notices(now)
        queued += self._campaigns(now)
        if queued:
            log.info("scheduled mail queued: %s", ", ".join(queued))
        self.retention(now)
        return queued

    def retention(self, now: datetime) -> PurgeReport | None:
        """Apply `[retention]` (see `mailbot.retention`) when its interval has passed, or at
        the next tick while a run left more to do; never fails the tick."""
        if self._retention_due is not None and now < self._retention_due:
            return None
        try:
            report = purge(self.config, self.store, now)
        except Exception:  # noqa: BLE001 - retention must not stop the timed mail
            log.exception("retention failed; trying again at the next interval")
            report = None
        interval = timedelta(minutes=self.config.retention.interval_minutes)
        self._retention_due = now if report is not None and report.more else now + interval
        return report

    def _recipients(self, job: Job) -> tuple[str, ...]:
        box, sched = self.config.mailbox, self.config.schedule
        if job.kind == "escalation" and sched.lead_address:
            return (sched.lead_address,)
        if job.kind == "reminder" and job.ticket.assignee and valid_address(job.ticket.assignee):
            return (job.ticket.assignee,)
        return tuple(box.staff_notify)

    def _render(self, job: Job, now: datetime) -> OutgoingMail | None:
        domain = self.config.mailbox.message_id_domain
        letter = {"reminder": "m", "escalation": "e", "wait_reminder": "w", "wait_closed": "c"}
        message_id = ticket_message_id(job.ticket.number, f"{letter[job.kind]}{_stamp(job.due)}",
                                       domain)
        if job.kind in ("reminder", "escalation"):
            return self.renderer.staff_alert(kind=job.kind, ticket=job.ticket,
                                             recipients=self._recipients(job),
                                             message_id=message_id, now=now,
                                             purpose=job.purpose)
        return self.renderer.customer_note(kind=job.kind, ticket=job.ticket,
                                           message_id=message_id, now=now, purpose=job.purpose)

    def _run(self, job: Job, now: datetime) -> bool:
        built = self._render(job, now)
        if built is None:  # nobody to tell (no staff list, invalid customer address)
            log.debug("%s for %s: no recipient", job.kind, job.ticket.number)
            return False
        try:
            with self.store.transaction() as tx:
                locked = tx.find_ticket(job.ticket.number)
                if locked is None:
                    return False
                ticket = locked.info
                # The ticket may have moved on since it was read: act on the current state.
                if job.kind in ("reminder", "escalation") and (
                        ticket.state != "open" or ticket.deadline != job.ticket.deadline):
                    return False
                if job.kind.startswith("wait") and (
                        ticket.state != "waiting" or ticket.waiting_since != job.ticket.waiting_since):
                    return False
                if not tx.enqueue(built, ticket_id=locked.id, inbound_id=None, now=now):
                    return False
                tx.add_ticket_event(locked.id, job.kind, detail=job.due.isoformat())
                if job.kind == "wait_closed":
                    tx.set_state(locked.id, "closed", now)
                return True
        except IntegrityError:  # another daemon queued it at the same moment
            return False

    # --- scheduled news campaigns ----------------------------------------------------

    def _campaigns(self, now: datetime) -> list[str]:
        """Queue the due scheduled campaigns. A recurring one queues the run of its latest
        occurrence at or before `now` (one run after downtime, however many were missed),
        then moves on to the first occurrence after `now`."""
        from mailbot.news import latest_run, load_campaign, next_run, queue_campaign, run_id

        done = []
        zone = self.calendar.zone
        for due in self.store.due_campaigns(now):
            name = due.name
            try:
                campaign = load_campaign(self.config.path(self.config.news.directory), name)
            except ConfigError as exc:
                log.error("scheduled campaign %s cannot be sent: %s", name, exc)
                continue
            if due.cron is None:
                count = queue_campaign(self.store, self.config, campaign, now)
                self.store.campaign_queued(name, now)
            else:
                # The purposes (news:NAME@occurrence:address) make a run exactly once per
                # recipient even if two schedulers get here for the same occurrence.
                run = run_id(name, latest_run(due.cron, now, zone), zone)
                campaign = dataclasses.replace(campaign, name=run)
                count = queue_campaign(self.store, self.config, campaign, now)
                self.store.campaign_queued(name, now, due_at=due.due_at,
                                           next_due=next_run(due.cron, now, zone))
                name = run
            log.info("campaign %s: queued %d mail(s)", name, count)
            done.append(f"campaign:{name}")
        return done

    # --- notices before HOTLINE START ends -------------------------------------------

    def notice_occasion(self, record: LicenseRecord, today: date) -> tuple[date, int] | None:
        """The START notice due `today` for `record`: (its day, days left at it; 0 = the
        final notice on the last day), the latest one if several fell due; None if none."""
        notices = self.config.notices
        if not notices.start_expiry or record.tier is not Tier.START:
            return None
        end = support_end(record)
        if end is None:
            return None
        occasions = [(end - timedelta(days=d), d) for d in notices.days_before]
        if notices.final_notice:
            occasions.append((end, 0))
        due = [(day, left) for day, left in occasions
               if day <= today <= day + timedelta(days=notices.grace_days)
               and (left == 0 or today <= end)]
        return max(due) if due else None

    def _license_notices(self, now: datetime) -> list[str]:
        if not self.config.notices.start_expiry:
            return []
        today = now.astimezone(self.calendar.zone).date()
        plans: list[tuple[str, LicenseRecord, int]] = []
        for record in self.store.license_snapshot().values():
            occasion = self.notice_occasion(record, today)
            if occasion is not None:
                day, left = occasion
                plans.append((f"start-notice:{record.license}:{day}:{left}", record, left))
        if not plans:
            return []
        by_license: dict[str, list[Contact]] = {}
        for contact in self.store.contacts():
            by_license.setdefault(contact.license, []).append(contact)
        wanted = [(bounded_purpose(key, c.email), c, record, left)
                  for key, record, left in plans for c in by_license.get(record.license, ())]
        done = self.store.existing_purposes([purpose for purpose, *_ in wanted])
        queued: list[str] = []
        for purpose, contact, record, left in wanted:
            if purpose in done:
                continue
            end = support_end(record)
            assert end is not None
            token = hashlib.sha256(purpose.encode()).hexdigest()[:16]
            message_id = other_message_id(f"notice-{token}",
                                          self.config.mailbox.message_id_domain)
            built = self.renderer.license_notice(contact=contact, record=record, ends_on=end,
                                                 days_left=left, message_id=message_id, now=now,
                                                 purpose=purpose)
            if built is not None and self._enqueue_one(built, now):
                queued.append(purpose)
        return queued

    def _enqueue_one(self, mail: OutgoingMail, now: datetime) -> bool:
        """Queue one timed mail in a transaction of its own; False when it was queued
        before (by this or another daemon)."""
        try:
            with self.store.transaction() as tx:
                return tx.enqueue(mail, ticket_id=None, inbound_id=None, now=now)
        except IntegrityError:
            return False

    def _digest(self, tickets: list[TicketInfo], now: datetime, day: date) -> bool:
        if self.digest is None:
            return False
        made = self.digest(tickets, now, day)
        if made is None:
            self._digest_skipped = day
            log.info("daily digest for %s skipped: nothing to report", day)
            return False
        return self._enqueue_one(made, now)


def previous_digest(calendar: BusinessCalendar, day: date, at: time) -> datetime:
    """When the digest before `day`'s went out: `at` on the previous working day."""
    prev = day - timedelta(days=1)
    for _ in range(30):
        if calendar.is_working_day(prev):
            break
        prev -= timedelta(days=1)
    return datetime.combine(prev, at, tzinfo=calendar.zone)


def digest_builder(config: Config) -> DigestBuilder | None:
    """The daily digest of open, overdue, due-today and new tickets, for the staff list; None
    (no mail) on a day without any, unless `schedule.digest_when_empty`."""
    if not config.schedule.digest or not config.mailbox.staff_notify:
        return None
    from mailbot.replies.digest import DigestRenderer, build_digest

    renderer = DigestRenderer(config)
    calendar = BusinessCalendar(config.calendar)
    at = time.fromisoformat(config.schedule.digest_time)

    def build(tickets: list[TicketInfo], now: datetime, day: date) -> OutgoingMail | None:
        digest = build_digest(tickets, now=now, since=previous_digest(calendar, day, at),
                              calendar=calendar)
        if not (digest.new or digest.open or config.schedule.digest_when_empty):
            return None
        message_id = f"<mailbot-digest-{day:%Y%m%d}@{config.mailbox.message_id_domain}>"
        return renderer.render(digest, message_id=message_id, now=now, purpose=f"digest:{day}")

    return build
