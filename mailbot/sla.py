"""SLA report: tickets opened in a period, answered in time or not, and first-response times
in working hours (pure; `mailbot sla report` reads the rows with `Store.sla_rows`).

A ticket's first response is its first ``answered`` event (a staff reply relayed to, or sent
directly to, the customer); a ticket with no such event but closed (``closed``
event, else its ``closed_at``) was *closed without answer*, responded to at the close. The
response is *in time* at or before the ticket's deadline, *breached* after it. A ticket with
no response is *breached* (overdue) once its deadline has passed at `now`, else *pending*; so
is one waiting for the customer since before its deadline (the deadline is paused).

Median and p90 are over answered tickets only (closes are not answers); p90 is the
nearest-rank percentile.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Final

from mailbot.business_hours import BusinessCalendar
from mailbot.domain import Priority, TicketInfo

__all__ = [
    "CSV_COLUMNS",
    "SlaLine",
    "SlaReport",
    "SlaRow",
    "SlaSummary",
    "format_hours",
    "lines_csv",
    "sla_report",
    "summary_json",
    "summary_rows",
]

SlaRow = tuple[TicketInfo, datetime | None, datetime | None]
"""(ticket, first ``answered`` event, first ``closed`` event) from the store."""

# Per-ticket status: the first two and the next two are in time/breached responses.
ANSWERED, ANSWERED_LATE = "answered", "answered_late"
CLOSED, CLOSED_LATE = "closed", "closed_late"
OVERDUE, PENDING, WAITING = "overdue", "pending", "waiting"
_IN_TIME: Final = frozenset({ANSWERED, CLOSED})
_BREACHED: Final = frozenset({ANSWERED_LATE, CLOSED_LATE, OVERDUE})

CSV_COLUMNS: Final = ("number", "priority", "opened", "deadline", "first_response", "response",
                      "working_hours", "status")


@dataclass(frozen=True, slots=True)
class SlaLine:
    """One ticket of the report; times in the calendar's zone.

    `response` is "answered", "closed" or "" (none yet); `working_hours` is the working time
    from opening to the response (None without one).
    """

    number: str
    priority: Priority
    opened: datetime
    deadline: datetime
    first_response: datetime | None
    response: str
    working_hours: float | None
    status: str

    @property
    def in_time(self) -> bool:
        return self.status in _IN_TIME

    @property
    def breached(self) -> bool:
        return self.status in _BREACHED


@dataclass(frozen=True)
class SlaSummary:
    """Counts over a set of tickets: ``answered_in_time + breached + pending == opened``
    (in time and breached include closes without answer)."""

    opened: int
    answered: int
    answered_in_time: int
    breached: int
    pending: int
    closed_without_answer: int
    median_first_response_hours: float | None
    p90_first_response_hours: float | None


@dataclass(frozen=True)
class SlaReport(SlaSummary):
    """The summary of all tickets, per priority, and one line per ticket (oldest first)."""

    period: tuple[date, date] | None
    now: datetime
    by_priority: dict[Priority, SlaSummary]
    lines: tuple[SlaLine, ...]


def sla_report(rows: Iterable[SlaRow], calendar: BusinessCalendar, now: datetime, *,
               period: tuple[date, date] | None = None) -> SlaReport:
    """The SLA report of `rows` at `now` (aware); `period` is only carried along."""
    zone = calendar.zone
    lines = []
    for ticket, answered_at, closed_event_at in sorted(rows, key=_opened):
        closed_at = closed_event_at
        if closed_at is None and ticket.state == "closed":
            closed_at = ticket.closed_at
        response, at = (("answered", answered_at) if answered_at is not None
                        else ("closed", closed_at) if closed_at is not None else ("", None))
        hours = None
        if at is None:
            waiting = (ticket.state == "waiting" and ticket.waiting_since is not None
                       and ticket.waiting_since <= ticket.deadline)
            status = WAITING if waiting else OVERDUE if ticket.deadline < now else PENDING
        else:
            hours = max(0.0, calendar.working_hours_between(ticket.opened_at, at))
            late = at > ticket.deadline
            status = ((ANSWERED_LATE if late else ANSWERED) if response == "answered"
                      else (CLOSED_LATE if late else CLOSED))
        lines.append(SlaLine(
            number=ticket.number,
            priority=ticket.priority,
            opened=ticket.opened_at.astimezone(zone),
            deadline=ticket.deadline.astimezone(zone),
            first_response=at.astimezone(zone) if at is not None else None,
            response=response,
            working_hours=hours,
            status=status,
        ))
    total = _summary(lines)
    return SlaReport(
        **dataclasses.asdict(total),
        period=period,
        now=now,
        by_priority={p: _summary([ln for ln in lines if ln.priority is p]) for p in Priority},
        lines=tuple(lines),
    )


def _opened(row: SlaRow) -> tuple[datetime, str]:
    return row[0].opened_at, row[0].number


def _summary(lines: Sequence[SlaLine]) -> SlaSummary:
    hours = sorted(ln.working_hours for ln in lines
                   if ln.response == "answered" and ln.working_hours is not None)
    return SlaSummary(
        opened=len(lines),
        answered=sum(ln.response == "answered" for ln in lines),
        answered_in_time=sum(ln.in_time for ln in lines),
        breached=sum(ln.breached for ln in lines),
        pending=sum(ln.status in (PENDING, WAITING) for ln in lines),
        closed_without_answer=sum(ln.response == "closed" for ln in lines),
        median_first_response_hours=statistics.median(hours) if hours else None,
        p90_first_response_hours=hours[math.ceil(0.9 * len(hours)) - 1] if hours else None,
    )


# -- formatters ---------------------------------------------------------------------------


def format_hours(hours: float | None) -> str:
    """Working hours with one decimal (``6.0``); "" for none."""
    return "" if hours is None else f"{hours:.1f}"


def _summary_dict(s: SlaSummary) -> dict[str, object]:
    def rounded(h: float | None) -> float | None:
        return None if h is None else round(h, 2)

    return {
        "opened": s.opened,
        "answered": s.answered,
        "answered_in_time": s.answered_in_time,
        "breached": s.breached,
        "pending": s.pending,
        "closed_without_answer": s.closed_without_answer,
        "median_first_response_hours": rounded(s.median_first_response_hours),
        "p90_first_response_hours": rounded(s.p90_first_response_hours),
    }


def summary_json(report: SlaReport) -> dict[str, object]:
    """The summary as one JSON-ready object (hours rounded to 2 decimals)."""
    period = ({"from": report.period[0].isoformat(), "to": report.period[1].isoformat()}
              if report.period is not None else None)
    return {
        "period": period,
        "now": report.now.isoformat(),
        **_summary_dict(report),
        "by_priority": {p.value: _summary_dict(s) for p, s in report.by_priority.items()},
    }


def summary_rows(report: SlaReport) -> list[tuple[str, ...]]:
    """Rows (label, total, then one column per priority) for a summary table."""
    columns: list[SlaSummary] = [report, *report.by_priority.values()]
    fields: list[tuple[str, str]] = [
        ("opened", "opened"),
        ("answered", "answered"),
        ("closed without answer", "closed_without_answer"),
        ("in time", "answered_in_time"),
        ("breached", "breached"),
        ("pending", "pending"),
    ]
    rows: list[tuple[str, ...]] = [
        (label, *(str(getattr(s, name)) for s in columns)) for label, name in fields]
    rows.append(("median first response (working h)",
                 *(format_hours(s.median_first_response_hours) for s in columns)))
    rows.append(("p90 first response (working h)",
                 *(format_hours(s.p90_first_response_hours) for s in columns)))
    return rows


def lines_csv(report: SlaReport) -> str:
    """The per-ticket lines as CSV with a header row (times ISO 8601 in the calendar's zone,
    working hours with one decimal)."""
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(CSV_COLUMNS)
    for ln in report.lines:
        out.writerow((
            ln.number,
            ln.priority.value,
            ln.opened.isoformat(timespec="minutes"),
            ln.deadline.isoformat(timespec="minutes"),
            ln.first_response.isoformat(timespec="minutes") if ln.first_response else "",
            ln.response,
            format_hours(ln.working_hours),
            ln.status,
        ))
    return buf.getvalue()
