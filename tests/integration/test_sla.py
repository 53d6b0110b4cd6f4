"""`mailbot sla report` against a real store (SQLite and PostgreSQL): tickets and their
events written directly, with known instants, in Prague working hours (8:00–17:00, 27 working
hours for a normal ticket, 4 for an emergency)."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from click.testing import CliRunner
from sqlalchemy import func, select, update

from mailbot import config as config_mod
from mailbot.business_hours import BusinessCalendar
from mailbot.cli import cli
from mailbot.domain import Priority
from mailbot.ingest.intake import save_raw
from mailbot.sla import CSV_COLUMNS, sla_report
from mailbot.store import Store, Ticket, TicketEvent
from tests.integration.test_replay import write_config

PRAGUE = ZoneInfo("Europe/Prague")
NOW = "2026-11-27T12:00:00+01:00"  # a Friday


def at(text: str) -> datetime:
    """A Prague wall-clock time, e.g. ``2026-11-23 09:00``."""
    return datetime.fromisoformat(text).replace(tzinfo=PRAGUE)


def ok(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


class Tickets:
    """Writes tickets and events with chosen instants."""

    def __init__(self, store: Store, calendar: BusinessCalendar) -> None:
        self.store, self.calendar, self.seq = store, calendar, 0

    def open(self, opened: str, *, emergency: bool = False) -> tuple[str, int]:
        self.seq += 1
        number = f"T-2026-{self.seq:06d}"
        opened_at = at(opened)
        inbound = save_raw(self.store, 
            f"Message-ID: <sla-{self.seq}@example.com>\r\nFrom: c@example.com\r\n\r\nhi\r\n"
            .encode(), "test")
        with self.store.transaction() as tx:
            ticket_id = tx.open_ticket(
                inbound_id=inbound.id, number=number, year=2026, seq=self.seq,
                opened_at=opened_at, deadline=self.calendar.deadline(opened_at, emergency),
                license=None, customer_email="c@example.com", customer_name="", subject="help",
                priority=Priority.EMERGENCY if emergency else Priority.NORMAL, language="cs")
        self._stamp(ticket_id, opened_at)
        return number, ticket_id

    def event(self, ticket_id: int, kind: str, when: str) -> None:
        with self.store.transaction() as tx:
            tx.add_ticket_event(ticket_id, kind, author="staff@estelar.example")
        self._stamp(ticket_id, at(when))

    def close(self, ticket_id: int, when: str) -> None:
        self.event(ticket_id, "closed", when)
        with self.store.session() as s:
            s.execute(update(Ticket).where(Ticket.id == ticket_id)
                      .values(state="closed", closed_at=at(when)))

    def _stamp(self, ticket_id: int, when: datetime) -> None:
        """Set the ticket's newest event to `when` (add_ticket_event stamps the clock)."""
        with self.store.session() as s:
            newest = s.scalar(select(func.max(TicketEvent.id))
                              .where(TicketEvent.ticket_id == ticket_id))
            s.execute(update(TicketEvent).where(TicketEvent.id == newest)
                      .values(created_at=when))


def setup(tmp_path: Path, store: Store, store_url: str) -> tuple[str, dict[str, str]]:
    """The config path and the numbers of the tickets by name."""
    cfg_path = write_config(tmp_path, store_url)
    calendar = BusinessCalendar(config_mod.load(cfg_path).calendar)
    t = Tickets(store, calendar)
    n: dict[str, str] = {}

    n["old"], i = t.open("2026-09-01 09:00")  # outside the default 30 days
    t.event(i, "answered", "2026-09-01 10:00")
    # Monday 9:00 → 15:00: 6 working hours, in time; #close after the answer is no close
    # without answer, a note and a later answer do not count.
    n["monday"], i = t.open("2026-11-23 09:00")
    t.event(i, "note", "2026-11-23 10:00")
    t.event(i, "answered", "2026-11-23 15:00")
    t.event(i, "closed", "2026-11-23 15:00")
    t.event(i, "answered", "2026-11-24 09:00")
    # Friday 16:00 → Monday 10:00: 1 + 2 working hours, the weekend skipped.
    n["weekend"], i = t.open("2026-11-20 16:00")
    t.event(i, "answered", "2026-11-23 10:00")
    # Wednesday 10:00, due Monday 10:00, answered Monday 12:00: 7 + 9 + 9 + 4 = 29, breached.
    n["late"], i = t.open("2026-11-18 10:00")
    t.event(i, "staff_mail", "2026-11-19 10:00")
    t.event(i, "answered", "2026-11-23 12:00")
    # Thursday 9:00, due Tuesday 9:00, never answered: breached at NOW.
    n["overdue"], _ = t.open("2026-11-19 09:00")
    # Thursday 26 9:00, due Tuesday 1 December: pending at NOW.
    n["pending"], _ = t.open("2026-11-26 09:00")
    # Emergency Tuesday 8:30, due 12:30, answered 10:00: 1.5 working hours, in time.
    n["emergency"], i = t.open("2026-11-24 08:30", emergency=True)
    t.event(i, "answered", "2026-11-24 10:00")
    # Closed after an hour without an answer (in time; not in the median).
    n["closed"], i = t.open("2026-11-24 13:00")
    t.close(i, "2026-11-24 14:00")
    # Late on Tuesday 24 and early on Wednesday 25 local time (both 24 November in UTC).
    n["tue_night"], _ = t.open("2026-11-24 23:30")
    n["wed_early"], _ = t.open("2026-11-25 00:30")
    return str(cfg_path), n


def test_report_counts_csv_json_and_period(tmp_path: Path, store: Store, store_url: str) -> None:
    cfg, n = setup(tmp_path, store, store_url)

    summary = json.loads(ok("sla", "report", "--json", "--now", NOW, "--config", cfg))
    assert summary["period"] == {"from": "2026-10-29", "to": "2026-11-27"}  # 30 days
    assert summary["now"] == "2026-11-27T12:00:00+01:00"
    assert {k: summary[k] for k in ("opened", "answered", "answered_in_time", "breached",
                                    "pending", "closed_without_answer")} == {
        "opened": 9, "answered": 4, "answered_in_time": 4, "breached": 2, "pending": 3,
        "closed_without_answer": 1}
    # Answered: 1.5, 3, 6, 29 working hours.
    assert summary["median_first_response_hours"] == 4.5
    assert summary["p90_first_response_hours"] == 29.0
    assert summary["by_priority"]["normal"] == {
        "opened": 8, "answered": 3, "answered_in_time": 3, "breached": 2, "pending": 3,
        "closed_without_answer": 1, "median_first_response_hours": 6.0,
        "p90_first_response_hours": 29.0}
    assert summary["by_priority"]["emergency"] == {
        "opened": 1, "answered": 1, "answered_in_time": 1, "breached": 0, "pending": 0,
        "closed_without_answer": 0, "median_first_response_hours": 1.5,
        "p90_first_response_hours": 1.5}

    rows = list(csv.DictReader(io.StringIO(
        ok("sla", "report", "--csv", "--now", NOW, "--config", cfg))))
    assert list(rows[0]) == list(CSV_COLUMNS)
    by = {r["number"]: r for r in rows}
    assert [r["number"] for r in rows] == [  # oldest first
        n["late"], n["overdue"], n["weekend"], n["monday"], n["emergency"], n["closed"],
        n["tue_night"], n["wed_early"], n["pending"]]
    assert by[n["monday"]] == {
        "number": n["monday"], "priority": "normal", "opened": "2026-11-23T09:00+01:00",
        "deadline": "2026-11-26T09:00+01:00", "first_response": "2026-11-23T15:00+01:00",
        "response": "answered", "working_hours": "6.0", "status": "answered"}
    assert by[n["weekend"]]["working_hours"] == "3.0"
    assert by[n["weekend"]]["deadline"] == "2026-11-25T16:00+01:00"
    assert (by[n["late"]]["deadline"], by[n["late"]]["working_hours"],
            by[n["late"]]["status"]) == ("2026-11-23T10:00+01:00", "29.0", "answered_late")
    assert by[n["overdue"]] == {
        "number": n["overdue"], "priority": "normal", "opened": "2026-11-19T09:00+01:00",
        "deadline": "2026-11-24T09:00+01:00", "first_response": "", "response": "",
        "working_hours": "", "status": "overdue"}
    assert (by[n["pending"]]["status"], by[n["pending"]]["working_hours"]) == ("pending", "")
    assert by[n["emergency"]] == {
        "number": n["emergency"], "priority": "emergency", "opened": "2026-11-24T08:30+01:00",
        "deadline": "2026-11-24T12:30+01:00", "first_response": "2026-11-24T10:00+01:00",
        "response": "answered", "working_hours": "1.5", "status": "answered"}
    assert (by[n["closed"]]["response"], by[n["closed"]]["working_hours"],
            by[n["closed"]]["status"]) == ("closed", "1.0", "closed")

    # --from/--to are inclusive local dates: 23–24 November, not the early 25th.
    rows = list(csv.DictReader(io.StringIO(ok(
        "sla", "report", "--csv", "--from", "2026-11-23", "--to", "2026-11-24", "--now", NOW,
        "--config", cfg))))
    assert [r["number"] for r in rows] == [n["monday"], n["emergency"], n["closed"],
                                           n["tue_night"]]
    period = json.loads(ok("sla", "report", "--json", "--from", "2026-11-23", "--to",
                           "2026-11-24", "--now", NOW, "--config", cfg))
    assert period["period"] == {"from": "2026-11-23", "to": "2026-11-24"}
    assert (period["opened"], period["answered"], period["pending"],
            period["median_first_response_hours"]) == (4, 2, 1, 3.75)
    # --from alone reaches back to the old ticket.
    wide = json.loads(ok("sla", "report", "--json", "--from", "2026-09-01", "--now", NOW,
                         "--config", cfg))
    assert (wide["opened"], wide["answered"], wide["median_first_response_hours"]) == (10, 5, 3.0)
    # At a later --now the pending tickets are overdue too.
    later = json.loads(ok("sla", "report", "--json", "--now", "2026-12-15T12:00:00+01:00",
                          "--from", "2026-11-01", "--config", cfg))
    assert (later["breached"], later["pending"]) == (5, 0)

    table = ok("sla", "report", "--now", NOW, "--config", cfg)
    assert "2026-10-29 – 2026-11-27" in table
    for label in ("opened", "in time", "breached", "pending", "closed without answer",
                  "median first response"):
        assert label in table
    assert "4.5" in table and "29.0" in table


def test_empty_period_and_bad_options(tmp_path: Path, store: Store, store_url: str) -> None:
    cfg = str(write_config(tmp_path, store_url))
    summary = json.loads(ok("sla", "report", "--json", "--now", NOW, "--config", cfg))
    assert summary["opened"] == 0 and summary["median_first_response_hours"] is None
    assert summary["p90_first_response_hours"] is None
    assert ok("sla", "report", "--csv", "--now", NOW, "--config", cfg) == (
        ",".join(CSV_COLUMNS) + "\n")
    runner = CliRunner()
    bad = runner.invoke(cli, ["sla", "report", "--from", "2026-11-24", "--to", "2026-11-23",
                              "--config", cfg])
    assert bad.exit_code == 2 and "after --to" in bad.output
    both = runner.invoke(cli, ["sla", "report", "--csv", "--json", "--config", cfg])
    assert both.exit_code == 2


def test_waiting_ticket_is_pending() -> None:
    """Unanswered, waiting for the customer since before its deadline: the deadline is
    paused, so the ticket is pending even after it (the pure function)."""
    from mailbot.domain import TicketInfo

    cfg = config_mod.Config()
    calendar = BusinessCalendar(cfg.calendar)
    opened = at("2026-11-23 09:00")
    ticket = TicketInfo(number="T-2026-000001", state="waiting", subject="s",
                        customer_email="c@example.com", customer_name="", license=None,
                        priority=Priority.NORMAL, language="cs", opened_at=opened,
                        deadline=calendar.deadline(opened, False),
                        waiting_since=at("2026-11-23 10:00"))
    report = sla_report([(ticket, None, None)], calendar, at("2026-12-10 12:00"))
    assert (report.pending, report.breached, report.lines[0].status) == (1, 0, "waiting")


def test_html_report_with_weekly_charts(tmp_path: Path, store: Store, store_url: str) -> None:
    """`--html FILE` writes one page that loads nothing from elsewhere: two inline SVG charts
    (first response per week against the deadline, in time vs breached) and the weekly table
    whose figures follow from the tickets of `setup`."""
    import re
    import xml.etree.ElementTree as ET
    from html.parser import HTMLParser

    cfg, n = setup(tmp_path, store, store_url)
    page_file = tmp_path / "sla.html"
    ok("sla", "report", "--html", str(page_file), "--now", NOW, "--config", cfg)
    page = page_file.read_text(encoding="utf-8")

    svgs = re.findall(r"<svg .*?</svg>", page, flags=re.S)
    assert len(svgs) == 2
    for svg in svgs:
        ET.fromstring(svg)  # well-formed XML, so browsers draw it inline
    assert not re.search(r"""\b(src|href)\s*=|@import|url\(""", page)  # nothing fetched
    assert "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    # Week 47 (16–22 Nov): late (29 h), overdue, weekend (3 h); week 48: the other six.
    assert "2026-W47: 2 breached" in svgs[1] and "2026-W47: 1 in time" in svgs[1]
    assert "2026-W48: 3 in time" in svgs[1] and "2026-W48: 0 breached" not in svgs[1]
    assert "2026-W47: median 16.0 h" in svgs[0] and "2026-W47: p90 29.0 h" in svgs[0]
    assert "2026-W48: median 3.8 h" in svgs[0] and "deadline 27 h" in svgs[0]

    class Rows(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.rows: list[list[str]] = []

        def handle_starttag(self, tag: str, attrs: object) -> None:
            if tag == "tr":
                self.rows.append([])

        def handle_data(self, data: str) -> None:
            if self.rows and self.lasttag in ("td", "th") and data.strip():
                self.rows[-1].append(data.strip())

    parsed = Rows()
    parsed.feed(page)
    assert ["2026-W47", "3", "1", "2", "16.0", "29.0"] in parsed.rows
    assert ["2026-W48", "6", "3", "0", "3.8", "6.0"] in parsed.rows
    assert any(row[:1] == [n["late"]] and row[-1] == "answered_late" for row in parsed.rows)
