"""The SLA report as one self-contained HTML page with inline SVG charts (pure).

`sla_weeks` groups a report's tickets by the ISO week they were opened in; `sla_html` draws,
per week, the median and p90 first-response time (working hours) against the ticket
deadline, and the tickets answered in time vs breached, then the summary and weekly tables.
The page loads nothing (no scripts, fonts or images from elsewhere), so it opens offline.
Every text is escaped; ticket numbers and statuses are the only data from the store.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from html import escape
from typing import Final

from mailbot.sla import SlaLine, SlaReport, format_hours, summary_rows

__all__ = ["SlaWeek", "sla_html", "sla_weeks"]

_W: Final = 720  # chart width in px
_H: Final = 220  # chart height in px
_PAD: Final = 40  # room for the axes' labels


@dataclass(frozen=True, slots=True)
class SlaWeek:
    """The tickets opened in one ISO week (`monday` is its first day)."""

    monday: date
    opened: int
    in_time: int
    breached: int
    median_hours: float | None
    p90_hours: float | None

    @property
    def label(self) -> str:
        year, week, _ = self.monday.isocalendar()
        return f"{year}-W{week:02d}"


def sla_weeks(lines: Sequence[SlaLine]) -> list[SlaWeek]:
    """One entry per ISO week with opened tickets, oldest first."""
    by_week: dict[date, list[SlaLine]] = {}
    for ln in lines:
        day = ln.opened.date()
        by_week.setdefault(date.fromordinal(day.toordinal() - day.weekday()), []).append(ln)
    weeks = []
    for monday, group in sorted(by_week.items()):
        hours = sorted(ln.working_hours for ln in group
                       if ln.response == "answered" and ln.working_hours is not None)
        weeks.append(SlaWeek(
            monday=monday,
            opened=len(group),
            in_time=sum(ln.in_time for ln in group),
            breached=sum(ln.breached for ln in group),
            median_hours=statistics.median(hours) if hours else None,
            p90_hours=hours[math.ceil(0.9 * len(hours)) - 1] if hours else None,
        ))
    return weeks


def _x(i: int, n: int) -> float:
    """The middle of slot `i` of `n` across the plot area."""
    return _PAD + (i + 0.5) * (_W - 2 * _PAD) / max(n, 1)


def _y(value: float, top: float) -> float:
    return _H - _PAD - value / top * (_H - 2 * _PAD) if top > 0 else _H - _PAD


def _axes(top: float, unit: str) -> list[str]:
    parts = [f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - _PAD}" y2="{_H - _PAD}" '
             'stroke="#444"/>',
             f'<line x1="{_PAD}" y1="{_PAD}" x2="{_PAD}" y2="{_H - _PAD}" stroke="#444"/>']
    for k in range(5):
        value = top * k / 4
        y = _y(value, top)
        parts.append(f'<text x="{_PAD - 4}" y="{y + 4:.1f}" text-anchor="end" '
                     f'font-size="10">{value:.0f}</text>')
    parts.append(f'<text x="4" y="{_PAD - 12}" font-size="11">{escape(unit)}</text>')
    return parts


def _week_labels(weeks: Sequence[SlaWeek]) -> list[str]:
    step = max(1, math.ceil(len(weeks) / 12))  # at most ~12 labels on the axis
    return [f'<text x="{_x(i, len(weeks)):.1f}" y="{_H - _PAD + 14}" text-anchor="middle" '
            f'font-size="10">{escape(w.label)}</text>'
            for i, w in enumerate(weeks) if i % step == 0]


def _response_chart(weeks: Sequence[SlaWeek], deadline_hours: float) -> str:
    """Median (bar) and p90 (tick) first response per week; the deadline as a dashed line."""
    values = [v for w in weeks for v in (w.median_hours, w.p90_hours) if v is not None]
    top = max([deadline_hours, *values]) * 1.1
    slot = (_W - 2 * _PAD) / max(len(weeks), 1)
    parts = _axes(top, "first response, working hours (bar: median, tick: p90)")
    for i, w in enumerate(weeks):
        x = _x(i, len(weeks))
        if w.median_hours is not None:
            y = _y(w.median_hours, top)
            parts.append(f'<rect x="{x - slot * 0.3:.1f}" y="{y:.1f}" width="{slot * 0.6:.1f}" '
                         f'height="{_H - _PAD - y:.1f}" fill="#4a7ab5">'
                         f'<title>{escape(w.label)}: median {format_hours(w.median_hours)} h'
                         f'</title></rect>')
        if w.p90_hours is not None:
            y = _y(w.p90_hours, top)
            parts.append(f'<line x1="{x - slot * 0.3:.1f}" y1="{y:.1f}" x2="{x + slot * 0.3:.1f}" '
                         f'y2="{y:.1f}" stroke="#1b2f4a" stroke-width="2">'
                         f'<title>{escape(w.label)}: p90 {format_hours(w.p90_hours)} h</title>'
                         '</line>')
    y = _y(deadline_hours, top)
    parts.append(f'<line x1="{_PAD}" y1="{y:.1f}" x2="{_W - _PAD}" y2="{y:.1f}" stroke="#c0392b" '
                 'stroke-dasharray="6 4"><title>deadline</title></line>')
    parts.append(f'<text x="{_W - _PAD}" y="{y - 4:.1f}" text-anchor="end" font-size="10" '
                 f'fill="#c0392b">deadline {deadline_hours:g} h</text>')
    return _svg("First response per week", parts + _week_labels(weeks))


def _breach_chart(weeks: Sequence[SlaWeek]) -> str:
    """Tickets answered in time (green) and breached (red) per week, stacked."""
    top = max([1, *(w.in_time + w.breached for w in weeks)]) * 1.1
    slot = (_W - 2 * _PAD) / max(len(weeks), 1)
    parts = _axes(top, "tickets (green: in time, red: breached)")
    for i, w in enumerate(weeks):
        x = _x(i, len(weeks)) - slot * 0.3
        base: float = _H - _PAD
        for count, colour, what in ((w.in_time, "#3c9d5d", "in time"),
                                    (w.breached, "#c0392b", "breached")):
            if count:
                y = _y(count, top) - (_H - _PAD - base)
                parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.6:.1f}" '
                             f'height="{base - y:.1f}" fill="{colour}">'
                             f'<title>{escape(w.label)}: {count} {what}</title></rect>')
                base = y
    return _svg("Breaches per week", parts + _week_labels(weeks))


def _svg(title: str, parts: Sequence[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{_W}" height="{_H}" '
            f'viewBox="0 0 {_W} {_H}"><title>{escape(title)}</title>{"".join(parts)}</svg>')


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    cells = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def sla_html(report: SlaReport, *, deadline_hours: float, zone: str) -> str:
    """The whole page: charts per week, the summary, the weekly table and every ticket."""
    weeks = sla_weeks(report.lines)
    period = (f"{report.period[0]} – {report.period[1]}" if report.period is not None
              else "all tickets")
    summary = _table(["", "total", *(p.value for p in report.by_priority)], summary_rows(report))
    weekly = _table(
        ["week", "opened", "in time", "breached", "median (h)", "p90 (h)"],
        [(w.label, str(w.opened), str(w.in_time), str(w.breached), format_hours(w.median_hours),
          format_hours(w.p90_hours)) for w in weeks])
    tickets = _table(
        ["ticket", "priority", "opened", "deadline", "first response", "working h", "status"],
        [(ln.number, ln.priority.value, ln.opened.strftime("%Y-%m-%d %H:%M"),
          ln.deadline.strftime("%Y-%m-%d %H:%M"),
          ln.first_response.strftime("%Y-%m-%d %H:%M") if ln.first_response else "",
          format_hours(ln.working_hours), ln.status) for ln in report.lines])
    charts = (_response_chart(weeks, deadline_hours) + _breach_chart(weeks) if weeks
              else "<p>No tickets were opened in this period.</p>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>SLA report {escape(period)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 2px 8px; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
svg {{ display: block; margin: 1em 0; }}
</style></head>
<body>
<h1>SLA report {escape(period)}</h1>
<p>Times in working hours of the business calendar ({escape(zone)}); as of
{escape(report.now.strftime("%Y-%m-%d %H:%M %Z"))}.</p>
{charts}
<h2>Summary</h2>
{summary}
<h2>Per week</h2>
{weekly}
<h2>Tickets</h2>
{tickets}
</body></html>
"""
