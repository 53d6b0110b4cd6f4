"""`mailbot sla report`: first responses against ticket deadlines, per period."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import click

from mailbot.cli.base import (
    cli,
    config_option,
    console,
    load_config,
    parse_now,
    store_for,
    table_,
)


@cli.group()
def sla() -> None:
    """Service levels: first responses against ticket deadlines."""


@sla.command("report")
@click.option("--from", "date_from", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              metavar="DATE",
              help="First day (local date of opening, inclusive; default: 29 days before --to).")
@click.option("--to", "date_to", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              metavar="DATE",
              help="Last day (local date of opening, inclusive; default: today).")
@click.option("--csv", "as_csv", is_flag=True, help="One CSV line per ticket, with a header.")
@click.option("--json", "as_json", is_flag=True, help="The summary as one JSON object.")
@click.option("--html", "html_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="FILE", help="Also write the report with charts per week as one HTML page.")
@click.option("--now", "now_text", default=None, hidden=True,
              help="The clock, ISO-8601 with offset (for tests).")
@config_option
def sla_report_command(date_from: datetime | None, date_to: datetime | None, as_csv: bool,
                       as_json: bool, html_file: Path | None, now_text: str | None,
                       config_path: Path | None) -> None:
    """Tickets opened, answered in time, breached; first-response times in working hours."""
    from datetime import timedelta

    from mailbot.business_hours import BusinessCalendar
    from mailbot.sla import lines_csv, sla_report, summary_json, summary_rows

    if as_csv and as_json:
        raise click.UsageError("--csv and --json exclude each other")
    now = parse_now(now_text)
    cfg = load_config(config_path)
    calendar = BusinessCalendar(cfg.calendar)
    zone = calendar.zone
    last = date_to.date() if date_to is not None else now.astimezone(zone).date()
    first = date_from.date() if date_from is not None else last - timedelta(days=29)
    if first > last:
        raise click.BadParameter(f"--from {first} is after --to {last}")
    start = datetime.combine(first, datetime.min.time(), tzinfo=zone)
    end = datetime.combine(last + timedelta(days=1), datetime.min.time(), tzinfo=zone)
    store = store_for(cfg, readonly=True)
    try:
        rows = store.sla_rows(start, end)
    finally:
        store.close()
    report = sla_report(rows, calendar, now, period=(first, last))
    if html_file is not None:
        from mailbot.sla_html import sla_html

        html_file.write_text(sla_html(report, deadline_hours=cfg.calendar.ticket_hours,
                                      zone=zone.key), encoding="utf-8")
    if as_json:
        click.echo(json.dumps(summary_json(report), ensure_ascii=False))
        return
    if as_csv:
        click.echo(lines_csv(report), nl=False)
        return
    table = table_("", "total", *(p.value for p in report.by_priority))
    table.title = f"SLA of tickets opened {first} – {last} ({zone.key})"
    for row in summary_rows(report):
        table.add_row(*row)
    console.print(table)
