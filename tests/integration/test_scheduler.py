"""The scheduler with an injected clock (no sleeping), on SQLite and PostgreSQL: reminders and
escalations fire once, at the right working-hour instants, across a weekend and Christmas;
a restart repeats nothing; waiting tickets are reminded and closed; emergencies alert at once."""

from __future__ import annotations

import email.policy
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.parser import BytesParser
from zoneinfo import ZoneInfo

import pytest

from mailbot import config as config_mod
from mailbot.domain import Priority
from mailbot.replies.conversation import ConversationRenderer
from mailbot.scheduler import Scheduler
from mailbot.store import Store
from tests.fixtures.store_rows import move_deadline

P = ZoneInfo("Europe/Prague")
LEAD = "vedouci@estelar.example"
NOTIFY = "tym-podpory@estelar.example"
_PARSE = BytesParser(policy=email.policy.default)


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=P)  # type: ignore[misc]


@pytest.fixture
def cfg(config: config_mod.Config) -> config_mod.Config:
    return config.model_copy(update={
        "mailbox": config.mailbox.model_copy(update={"staff_notify": (NOTIFY,)}),
        "schedule": config.schedule.model_copy(update={"lead_address": LEAD, "digest": False}),
    })


def scheduler(cfg: config_mod.Config, store: Store) -> Scheduler:
    """A fresh scheduler, as after a restart (it keeps no state of its own)."""
    return Scheduler(cfg, store, ConversationRenderer(cfg, b"secret"))


def open_ticket(store: Store, number: str, opened: datetime, deadline: datetime,
                priority: Priority = Priority.NORMAL, customer: str = "dvorak@strojirny-hranice.cz") -> None:
    seq = int(number[-6:])
    store.allocate_ticket_numbers(2026, 1)
    with store.transaction() as tx:
        tx.open_ticket(inbound_id=None, number=number, year=2026, seq=seq, opened_at=opened,  # type: ignore[arg-type]
                       deadline=deadline, license="40127733", customer_email=customer,
                       customer_name="Strojírny Hranice a.s.", subject="Nejde uložit kalendář",
                       priority=priority, language="cs", message_id="<req@strojirny-hranice.cz>")


def sent(store: Store, kind: str) -> list[EmailMessage]:
    rows = sorted((r for r in store.list_outbox(limit=1000) if r.kind == kind), key=lambda r: r.id)
    return [_PARSE.parsebytes(r.raw) for r in rows]  # type: ignore[misc]


def test_reminder_and_escalation_across_christmas(cfg: config_mod.Config, store: Store) -> None:
    """Opened Wed 23 Dec 10:00: 27 working hours skip 24–26 Dec (holidays) and Sunday, so the
    deadline is Wed 30 Dec 10:00 and the reminder (4 working hours before) Tue 29 Dec 15:00."""
    open_ticket(store, "T-2026-000001", at(2026, 12, 23, 10), at(2026, 12, 30, 10))
    s = scheduler(cfg, store)
    assert s.run_due(at(2026, 12, 24, 12)) == []
    assert s.run_due(at(2026, 12, 29, 14, 59)) == []
    assert s.run_due(at(2026, 12, 29, 15, 0)) == [f"reminder:T-2026-000001:{int(at(2026, 12, 30, 10).timestamp() // 60)}"]
    assert s.run_due(at(2026, 12, 29, 16, 0)) == []  # once
    s = scheduler(cfg, store)  # restart
    assert s.run_due(at(2026, 12, 30, 9, 59)) == []
    [escalation] = s.run_due(at(2026, 12, 30, 10, 0))
    assert escalation.startswith("escalation:T-2026-000001:")
    assert scheduler(cfg, store).run_due(at(2026, 12, 30, 11, 0)) == []  # restart: not again
    [reminder] = sent(store, "reminder")
    [alert] = sent(store, "escalation")
    assert [a.addr_spec for a in reminder["To"].addresses] == [NOTIFY]
    assert [a.addr_spec for a in alert["To"].addresses] == [LEAD]
    assert "[#T-2026-000001]" in str(alert["Subject"]) and str(alert["Reply-To"]).startswith("podpora+T-2026-000001.")
    kinds = [e.kind for e in store.ticket_events("T-2026-000001")]
    assert kinds == ["opened", "reminder", "escalation"]


def test_reminder_over_a_weekend(cfg: config_mod.Config, store: Store) -> None:
    """Emergency opened Fri 27 Nov 16:00, due Mon 30 Nov 11:00 (1 + 3 working hours); with a
    2-hour reminder it fires Mon 9:00, not during the weekend."""
    cfg = cfg.model_copy(update={"schedule": cfg.schedule.model_copy(update={"reminder_hours": 2})})
    open_ticket(store, "T-2026-000002", at(2026, 11, 27, 16), at(2026, 11, 30, 11), Priority.EMERGENCY)
    s = scheduler(cfg, store)
    for quiet in (at(2026, 11, 27, 16, 59), at(2026, 11, 28, 12), at(2026, 11, 30, 8, 59)):
        assert s.run_due(quiet) == []
    assert len(s.run_due(at(2026, 11, 30, 9, 0))) == 1


def test_downtime_runs_due_work_once_and_a_new_deadline_gets_a_new_reminder(
        cfg: config_mod.Config, store: Store) -> None:
    """Down across the reminder and the deadline: at start the escalation goes out once (a
    reminder after the deadline would be pointless). A changed deadline is a new occasion."""
    open_ticket(store, "T-2026-000003", at(2026, 11, 23, 9), at(2026, 11, 26, 9))
    assert [p.split(":")[0] for p in scheduler(cfg, store).run_due(at(2026, 11, 27, 10))] == ["escalation"]
    assert scheduler(cfg, store).run_due(at(2026, 11, 27, 10, 1)) == []
    move_deadline(store, "T-2026-000003", at(2026, 12, 1, 12))
    assert [p.split(":")[0] for p in scheduler(cfg, store).run_due(at(2026, 12, 1, 8, 0))] == ["reminder"]


def test_closed_or_waiting_tickets_get_no_deadline_mail(cfg: config_mod.Config, store: Store) -> None:
    open_ticket(store, "T-2026-000004", at(2026, 11, 23, 9), at(2026, 11, 26, 9))
    store.set_ticket_state("T-2026-000004", "closed", by="test", now=at(2026, 11, 24, 9))
    assert scheduler(cfg, store).run_due(at(2026, 11, 27, 10)) == []


def test_waiting_ticket_reminded_then_closed(cfg: config_mod.Config, store: Store) -> None:
    """#wait from Mon 23 Nov 9:00: after 5 working days (Mon 30 Nov 9:00) the customer gets a
    polite reminder, after 5 more (Mon 7 Dec 9:00) the ticket is closed with a notice."""
    open_ticket(store, "T-2026-000005", at(2026, 11, 23, 8), at(2026, 11, 26, 8))
    store.set_ticket_state("T-2026-000005", "waiting", by="test", now=at(2026, 11, 23, 9))
    s = scheduler(cfg, store)
    assert s.run_due(at(2026, 11, 30, 8, 59)) == []
    assert [p.split(":")[0] for p in s.run_due(at(2026, 11, 30, 9))] == ["wait-reminder"]
    assert s.run_due(at(2026, 12, 7, 8, 59)) == []
    assert [p.split(":")[0] for p in s.run_due(at(2026, 12, 7, 9))] == ["wait-closed"]
    info = store.ticket_info("T-2026-000005")
    assert info is not None and info.state == "closed"
    [note] = sent(store, "wait_reminder")
    [closed] = sent(store, "wait_closed")
    assert [a.addr_spec for a in note["To"].addresses] == ["dvorak@strojirny-hranice.cz"]
    assert note["In-Reply-To"] == "<req@strojirny-hranice.cz>"
    assert "uzavřeli" in closed.get_content()
    assert scheduler(cfg, store).run_due(at(2026, 12, 8, 9)) == []


def test_daily_digest_on_working_days_once(cfg: config_mod.Config, store: Store) -> None:
    """The digest goes out at 7:30 on working days, once per day (restarts included), never
    at the weekend; it lists the open tickets with their tags."""
    from mailbot.scheduler import digest_builder

    cfg = cfg.model_copy(update={"schedule": cfg.schedule.model_copy(update={"digest": True})})
    open_ticket(store, "T-2026-000006", at(2026, 11, 23, 9), at(2026, 11, 26, 9))
    open_ticket(store, "T-2026-000007", at(2026, 11, 26, 16), at(2026, 12, 2, 16))

    def digests(now: datetime) -> list[str]:
        s = Scheduler(cfg, store, ConversationRenderer(cfg, b"secret"), digest_builder(cfg))
        return [p for p in s.run_due(now) if p.startswith("digest:")]

    assert digests(at(2026, 11, 27, 7, 29)) == []
    assert digests(at(2026, 11, 27, 7, 30)) == ["digest:2026-11-27"]
    assert digests(at(2026, 11, 27, 12, 0)) == []
    assert digests(at(2026, 11, 28, 9, 0)) == []  # Saturday
    assert digests(at(2026, 11, 30, 10, 0)) == ["digest:2026-11-30"]  # started late
    first = sent(store, "digest")[0]
    assert [a.addr_spec for a in first["To"].addresses] == [NOTIFY]
    text = first.get_body(("plain",)).get_content()
    assert "[#T-2026-000006]" in text and "[#T-2026-000007]" in text
    assert first.get_body(("html",)) is not None


def test_no_empty_digest_at_first_start(cfg: config_mod.Config, store: Store) -> None:
    """A store without new or open tickets gets no digest (the daily digest used to go out at
    first start with every count zero); `digest_when_empty` brings it back, and a day with a
    ticket still gets one."""
    from mailbot.scheduler import digest_builder

    def digests(c: config_mod.Config, now: datetime) -> list[str]:
        s = Scheduler(c, store, ConversationRenderer(c, b"secret"), digest_builder(c))
        return [p for p in s.run_due(now) if p.startswith("digest:")]

    on = cfg.model_copy(update={"schedule": cfg.schedule.model_copy(update={"digest": True})})
    assert digests(on, at(2026, 11, 27, 7, 30)) == []
    assert sent(store, "digest") == []
    always = on.model_copy(update={"schedule": on.schedule.model_copy(
        update={"digest_when_empty": True})})
    assert digests(always, at(2026, 11, 27, 8, 0)) == ["digest:2026-11-27"]
    open_ticket(store, "T-2026-000008", at(2026, 11, 27, 9), at(2026, 12, 2, 9))
    assert digests(on, at(2026, 11, 30, 7, 30)) == ["digest:2026-11-30"]
