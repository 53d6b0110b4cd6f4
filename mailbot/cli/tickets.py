"""`mailbot tickets`: list, show, export attachments, close, assign."""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import re
from datetime import datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from mailbot.attachments import AttachmentStore
from mailbot.cli.base import (
    F,
    cli,
    config_option,
    console,
    load_config,
    parse_now,
    store_for,
    table_,
)

if TYPE_CHECKING:
    from mailbot.domain import TicketInfo
    from mailbot.store import TicketEventRecord

TICKET_NUMBER = re.compile(r"T-[0-9]{4}-[0-9]{6}", re.IGNORECASE)


def ticket_number(ctx: click.Context | None, param: click.Parameter | None, value: str) -> str:
    """A ticket number argument, upper-cased: `t-2026-000145` → `T-2026-000145`."""
    value = value.strip()
    if not TICKET_NUMBER.fullmatch(value):
        raise click.BadParameter(f"expected a ticket number like T-2026-000145, got {value!r}",
                                 ctx=ctx, param=param)
    return value.upper()


def by_option(f: F) -> F:
    return click.option(
        "--by",
        default=lambda: os.environ.get("USER") or "cli",
        show_default="$USER or cli",
        help="Who did it (recorded as the ticket event's author).",
    )(f)


def _json_value(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _ticket_json(t: TicketInfo, now: datetime | None = None) -> dict[str, object]:
    data = {f.name: _json_value(getattr(t, f.name)) for f in dataclasses.fields(t)}
    if now is not None:
        data["overdue"] = _is_overdue(t, now)
    return data


def _event_json(e: TicketEventRecord) -> dict[str, object]:
    return {"id": e.id, "kind": e.kind, "author": e.author, "created_at": e.created_at.isoformat(),
            "detail": e.detail, "inbound_id": e.inbound_id}


def _is_overdue(t: TicketInfo, now: datetime) -> bool:
    return t.state == "open" and t.deadline < now


def _local(value: datetime | None, zone: tzinfo) -> str:
    return value.astimezone(zone).strftime("%Y-%m-%d %H:%M") if value is not None else ""


def _customer(t: TicketInfo) -> str:
    return f"{t.customer_name} <{t.customer_email}>" if t.customer_name else t.customer_email


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


@cli.group()
def tickets() -> None:
    """Support tickets: list, show, close, assign."""


@tickets.command("list")
@click.option("--open", "only_open", is_flag=True, help="Only open and waiting tickets.")
@click.option("--overdue", is_flag=True, help="Only open tickets past their deadline.")
@click.option("--mine", "assignee", default=None, metavar="NAME",
              help="Only tickets assigned to NAME (case-insensitive).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per ticket.")
@click.option("--now", "now_text", default=None, hidden=True,
              help="The clock, ISO-8601 with offset (for tests).")
@config_option
def tickets_list(only_open: bool, overdue: bool, assignee: str | None, limit: int,
                 as_json: bool, now_text: str | None, config_path: Path | None) -> None:
    """List tickets, newest first."""
    now = parse_now(now_text)
    cfg = load_config(config_path)
    store = store_for(cfg, readonly=True)
    try:
        rows = store.list_tickets(
            states=("open", "waiting") if only_open else (),
            overdue_at=now if overdue else None,
            assignee=assignee,
            limit=limit,
        )
    finally:
        store.close()
    if as_json:
        for t in rows:
            click.echo(json.dumps(_ticket_json(t, now), ensure_ascii=False))
        return
    zone = cfg.calendar.zone
    table = table_("number", "state", "priority", "deadline", "overdue", "customer", "license",
                   "assignee", "subject")
    for t in rows:
        table.add_row(t.number, t.state, t.priority.value, _local(t.deadline, zone),
                      "[red]OVERDUE[/red]" if _is_overdue(t, now) else "",
                      escape(_customer(t)), escape(t.license or ""), escape(t.assignee or ""),
                      escape(_shorten(t.subject, 50)))
    console.print(table)
    click.echo(f"{len(rows)} ticket(s)")


@tickets.command("show")
@click.argument("number", callback=ticket_number)
@click.option("--json", "as_json", is_flag=True, help="One JSON object: ticket and events.")
@click.option("--now", "now_text", default=None, hidden=True,
              help="The clock, ISO-8601 with offset (for tests).")
@config_option
def tickets_show(number: str, as_json: bool, now_text: str | None,
                 config_path: Path | None) -> None:
    """Print one ticket with its history."""
    now = parse_now(now_text)
    cfg = load_config(config_path)
    store = store_for(cfg, readonly=True)
    try:
        info = store.ticket_info(number)
        if info is None:
            raise click.ClickException(f"no ticket {number}")
        events = store.ticket_events(number)
        files = store.ticket_attachments(number)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps({"ticket": _ticket_json(info, now),
                               "events": [_event_json(e) for e in events],
                               "attachments": [{"filename": a.filename, "size": a.size,
                                                "content_type": a.content_type,
                                                "sha256": a.sha256} for a in files]},
                              ensure_ascii=False))
        return
    zone = cfg.calendar.zone
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold")
    fields.add_column(overflow="fold")
    deadline = _local(info.deadline, zone)
    if _is_overdue(info, now):
        deadline += " [red]OVERDUE[/red]"
    for name, value in (
        ("state", escape(info.state)),
        ("priority", info.priority.value),
        ("subject", escape(info.subject)),
        ("customer", escape(_customer(info))),
        ("license", escape(info.license or "")),
        ("language", escape(info.language)),
        ("assignee", escape(info.assignee or "")),
        ("opened", _local(info.opened_at, zone)),
        ("deadline", deadline),
        ("closed", _local(info.closed_at, zone)),
    ):
        fields.add_row(name, value)
    console.print(Panel(fields, title=f"ticket {info.number}", title_align="left", expand=False))
    table = table_("time", "kind", "author", "detail")
    for e in events:
        table.add_row(_local(e.created_at, zone), escape(e.kind), escape(e.author),
                      escape(_shorten(e.detail or "", 100)))
    console.print(table)
    if files:
        listing = table_("attachment", "type", "bytes")
        for a in files:
            listing.add_row(escape(a.filename), escape(a.content_type), str(a.size))
        console.print(listing)


@tickets.command("attachments")
@click.argument("number", callback=ticket_number)
@click.option("--to", "target", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory to copy the ticket's attachments into (created if missing).")
@config_option
def tickets_attachments(number: str, target: Path, config_path: Path | None) -> None:
    """Copy a ticket's attachments into a directory, under their sanitised names."""
    cfg = load_config(config_path)
    store = store_for(cfg, readonly=True)
    try:
        if store.ticket_info(number) is None:
            raise click.ClickException(f"no ticket {number}")
        files = store.ticket_attachments(number)
    finally:
        store.close()
    written = AttachmentStore(cfg.path(cfg.store.attachments_dir)).export(
        [(a.filename, a.sha256) for a in files], target)
    for path in written:
        click.echo(str(path))
    click.echo(f"{len(written)} attachment(s) of {number} in {target}")


@tickets.command("close")
@click.argument("number", callback=ticket_number)
@by_option
@config_option
def tickets_close(number: str, by: str, config_path: Path | None) -> None:
    """Close a ticket."""
    store = store_for(load_config(config_path))
    try:
        info = store.ticket_info(number)
        if info is None:
            raise click.ClickException(f"no ticket {number}")
        if info.state == "closed":
            click.echo(f"{number} is already closed")
            return
        if not store.set_ticket_state(number, "closed", by=by):
            raise click.ClickException(f"no ticket {number}")
    finally:
        store.close()
    click.echo(f"closed {number} (by {by})")


@tickets.command("assign")
@click.argument("number", callback=ticket_number)
@click.argument("name")
@by_option
@config_option
def tickets_assign(number: str, name: str, by: str, config_path: Path | None) -> None:
    """Assign a ticket to NAME."""
    name = name.strip()
    if not name:
        raise click.BadParameter("must not be empty", param_hint="NAME")
    store = store_for(load_config(config_path))
    try:
        if not store.assign_ticket(number, name, by=by):
            raise click.ClickException(f"no ticket {number}")
    finally:
        store.close()
    click.echo(f"assigned {number} to {name} (by {by})")
