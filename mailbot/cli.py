"""The `mailbot` command line (click; rich for tables). The only place that exits.

Every command takes `--config PATH` (default `config/mailbot.toml`, or $MAILBOT_CONFIG).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from datetime import datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from mailbot import config as config_mod
from mailbot.attachments import AttachmentStore
from mailbot.errors import ConfigError, MailbotError

if TYPE_CHECKING:
    from mailbot.config import Config
    from mailbot.domain import TicketInfo
    from mailbot.store import Store, TicketEvent

F = TypeVar("F", bound=Callable[..., Any])

# Not a terminal (pipes, logs): wide enough that addresses and errors stay on one line.
console = Console(width=shutil.get_terminal_size((160, 24)).columns)
err_console = Console(stderr=True)


def table_(*columns: str) -> Table:
    """A rich table whose cells wrap instead of being cut off in narrow terminals."""
    t = Table()
    for name in columns:
        t.add_column(name, overflow="fold")
    return t


def config_option(f: F) -> F:
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="MAILBOT_CONFIG",
        default=None,
        help="Config file (default: config/mailbot.toml).",
    )(f)


def load_config(path: Path | None) -> config_mod.Config:
    try:
        return config_mod.load(path)
    except ConfigError as exc:
        raise click.ClickException(f"config error: {exc}") from None


def parse_now(value: str | None) -> datetime:
    from mailbot.store import utcnow

    if value is None:
        return utcnow()
    try:
        now = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"expected ISO-8601 like 2026-11-25T10:00:00+01:00, got {value!r}")
    if now.tzinfo is None:
        raise click.BadParameter("--now needs a UTC offset, e.g. 2026-11-25T10:00:00+01:00")
    return now


@click.group()
@click.option("--log-level", default="INFO", envvar="MAILBOT_LOG_LEVEL", show_default=True)
def cli(log_level: str) -> None:
    """mailbot: the support mailbox daemon and its tools."""
    from mailbot import logs

    logs.setup(log_level.upper())


@cli.command()
@config_option
def run(config_path: Path | None) -> None:
    """Run the daemon: intakes, worker, outbox sender (stop with SIGTERM or Ctrl-C)."""
    import asyncio
    import signal
    import threading

    from mailbot import app

    # A stop asked for while starting up (migrations, binding) is honoured once running.
    early_stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: early_stop.set())
    cfg = load_config(config_path)
    asyncio.run(app.run(cfg, early_stop))


@cli.command("check-config")
@config_option
def check_config(config_path: Path | None) -> None:
    """Validate the configuration and print a summary."""
    cfg = load_config(config_path)
    click.echo(
        f"config OK: store={cfg.store.url} support={cfg.mailbox.support_address} "
        f"outbound={cfg.outbound.mode}"
    )


# --- db ---------------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@config_option
def db_upgrade(config_path: Path | None) -> None:
    """Create or migrate the schema to the newest revision."""
    from mailbot import migrations
    from mailbot.app import open_store

    store = open_store(load_config(config_path))
    click.echo(f"schema at revision {migrations.current(store.engine)}")


# --- licenses ---------------------------------------------------------------------------


@cli.group()
def licenses() -> None:
    """The license registry."""


@licenses.command("import")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@config_option
def licenses_import(csv_file: Path, config_path: Path | None) -> None:
    """Upsert the registry from a CSV file (bad rows are reported and skipped)."""
    from mailbot.app import open_store
    from mailbot.registry import read_license_file

    records, errors = read_license_file(csv_file)
    store = open_store(load_config(config_path))
    n = store.upsert_licenses(records)
    for e in errors:
        err_console.print(f"[yellow]{csv_file}: {e}[/yellow]", highlight=False)
    click.echo(f"imported {n} license(s), {len(errors)} bad row(s)")
    if errors:
        sys.exit(1)


# --- contacts ---------------------------------------------------------------------------


@cli.group()
def contacts() -> None:
    """The contacts list: addresses per license (news, notices before support ends)."""


@contacts.command("import")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@config_option
def contacts_import(csv_file: Path, config_path: Path | None) -> None:
    """Upsert contacts from a CSV file with columns email,license,name,language."""
    from mailbot.app import open_store
    from mailbot.contacts import read_contacts_file

    found, errors = read_contacts_file(csv_file)
    store = open_store(load_config(config_path))
    try:
        n = store.upsert_contacts(found)
    finally:
        store.close()
    for e in errors:
        err_console.print(f"[yellow]{csv_file}: {e}[/yellow]", highlight=False)
    click.echo(f"imported {n} contact(s), {len(errors)} bad row(s)")
    if errors:
        sys.exit(1)


@contacts.command("list")
@click.option("--license", "license_number", default=None, help="Only this license's contacts.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@config_option
def contacts_list(license_number: str | None, as_json: bool, config_path: Path | None) -> None:
    """List contacts."""
    from mailbot.app import open_store

    store = open_store(load_config(config_path))
    try:
        found = store.contacts(license_number)
    finally:
        store.close()
    if as_json:
        for c in found:
            click.echo(json.dumps(dataclasses.asdict(c), ensure_ascii=False))
        return
    table = table_("email", "license", "name", "language")
    for c in found:
        table.add_row(escape(c.email), c.license, escape(c.name), c.language)
    console.print(table)


@contacts.command("suppressed")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@config_option
def contacts_suppressed(as_json: bool, config_path: Path | None) -> None:
    """Addresses no mailing reaches, with the reason."""
    from mailbot.app import open_store

    store = open_store(load_config(config_path))
    try:
        rows = store.suppressed()
    finally:
        store.close()
    if as_json:
        for address, reason, since in rows:
            click.echo(json.dumps({"address": address, "reason": reason,
                                   "since": since.isoformat()}))
        return
    table = table_("address", "reason", "since")
    for address, reason, since in rows:
        table.add_row(escape(address), reason, since.isoformat(timespec="minutes"))
    console.print(table)


# --- news ---------------------------------------------------------------------------------


@cli.group()
def news() -> None:
    """News mailings: campaign files in templates/news/ (see mailbot/news.py)."""


def _campaign(cfg: config_mod.Config, name: str) -> Any:
    from mailbot.news import load_campaign

    try:
        return load_campaign(cfg.path(cfg.news.directory), name)
    except MailbotError as exc:
        raise click.ClickException(str(exc)) from None


@news.command("preview")
@click.argument("name")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Write the first recipients' mails here as .eml files.")
@click.option("--limit", default=3, show_default=True, help="How many recipients to render.")
@click.option("--to", "test_to", default=None, metavar="ADDRESS",
              help="Send the first recipient's mail to ADDRESS now, subject marked [TEST].")
@click.option("--now", "now_text", default=None, hidden=True)
@config_option
def news_preview(name: str, out_dir: Path | None, limit: int, test_to: str | None,
                 now_text: str | None, config_path: Path | None) -> None:
    """Show who a campaign goes to and render it for the first recipients."""
    from mailbot.app import open_store
    from mailbot.news import NewsRenderer, audience

    cfg = load_config(config_path)
    campaign = _campaign(cfg, name)
    now = parse_now(now_text)
    store = open_store(cfg)
    try:
        suppressed = {a for a, _, _ in store.suppressed()}
        people = list(audience(campaign, store.contacts(), store.license_snapshot(),
                               suppressed, now))
    finally:
        store.close()
    click.echo(f"{name}: audience {campaign.audience}, {len(people)} recipient(s)")
    renderer = NewsRenderer(cfg)
    for i, (contact, record) in enumerate(people[:limit]):
        made = renderer.render(campaign, contact, record, "0" * 20, now)
        if made is None:
            continue
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / f"{i + 1}.eml").write_bytes(made[0])
        click.echo(f"  {contact.email} ({contact.language}, {record.license})")
    if test_to is not None:
        if not people:
            raise click.ClickException("no recipient to render the test mail for")
        contact, record = people[0]
        test = dataclasses.replace(
            campaign, subjects={k: f"[TEST] {v}" for k, v in campaign.subjects.items()})
        made = renderer.render(test, dataclasses.replace(contact, email=test_to), record,
                               "0" * 20, now)
        if made is None:
            raise click.ClickException(f"--to {test_to!r}: not a valid address")
        _send_now(cfg, made[0], test_to)


def _send_now(cfg: Config, raw: bytes, to: str) -> None:
    """Hand one message to the outbound transport at once (not through the outbox)."""
    from mailbot.errors import DeliveryError
    from mailbot.replies.smtp import build_transport

    transport = build_transport(cfg)
    try:
        reply = transport.send(raw, cfg.mailbox.support_address, [to])
    except DeliveryError as exc:
        raise click.ClickException(f"test mail to {to} not sent: {exc}") from None
    finally:
        transport.close()
    click.echo(f"test mail sent to {to}: {reply}")


class _RateColumn(ProgressColumn):
    """Items per second of a task (rich's own speed column counts bytes)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f}/s" if speed else "–/s", style="progress.data.speed")


def _progress() -> Progress:
    """A progress bar with count, rate and time left, on stderr."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    _RateColumn(), TimeRemainingColumn(), console=err_console)


@news.command("send")
@click.argument("name")
@click.option("--follow", is_flag=True,
              help="After queueing, show the daemon sending it until nothing is pending.")
@click.option("--now", "now_text", default=None, hidden=True)
@config_option
def news_send(name: str, follow: bool, now_text: str | None, config_path: Path | None) -> None:
    """Queue the campaign for every recipient not queued before (the daemon sends it)."""
    from mailbot.app import open_store
    from mailbot.news import queue_campaign

    cfg = load_config(config_path)
    campaign = _campaign(cfg, name)
    store = open_store(cfg)
    try:
        with _progress() as bar:
            task = bar.add_task(f"queueing {name}", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            queued = queue_campaign(store, cfg, campaign, parse_now(now_text), progress)
        click.echo(f"{name}: queued {queued} mail(s)")
        if follow:
            _follow(store, name)
    finally:
        store.close()


def _follow(store: Store, name: str, poll: float = 0.5) -> None:
    """Show the campaign's sending progress until no mail of it is queued (Ctrl-C leaves
    the daemon sending)."""
    counts = store.campaign_status(name)
    total = sum(n for state, n in counts.items() if state != "unsubscribed")
    try:
        with _progress() as bar:
            task = bar.add_task(f"sending {name}", total=total)
            while True:
                counts = store.campaign_status(name)
                bar.update(task, completed=total - counts.get("queued", 0))
                if not counts.get("queued"):
                    break
                time.sleep(poll)
    except KeyboardInterrupt:
        click.echo("stopped following; the daemon goes on sending", err=True)
    click.echo(", ".join(f"{state} {n}" for state, n in sorted(counts.items())))


@news.command("schedule")
@click.argument("name", required=False)
@click.option("--at", "at_text", default=None, help="When, ISO-8601 with offset (once).")
@click.option("--cron", "cron", default=None,
              help='Recurring: a cron expression in the business time zone, e.g. "0 8 1 * *".')
@click.option("--list", "as_list", is_flag=True, help="List the schedules instead.")
@click.option("--now", "now_text", default=None, hidden=True)
@config_option
def news_schedule(name: str | None, at_text: str | None, cron: str | None, as_list: bool,
                  now_text: str | None, config_path: Path | None) -> None:
    """Have the daemon queue the campaign at a given time (once) or on a cron schedule
    (each run once per recipient, as campaign NAME@YYYYMMDDTHHMM)."""
    from mailbot.app import open_store
    from mailbot.news import check_cron, next_run

    if as_list:
        if name or at_text or cron:
            raise click.UsageError("--list takes no NAME, --at or --cron")
        _show_schedules(config_path)
        return
    if not name:
        raise click.UsageError("missing NAME (or use --list)")
    if (at_text is None) == (cron is None):
        raise click.UsageError("give either --at ISO or --cron EXPR")
    cfg = load_config(config_path)
    zone = cfg.calendar.zone
    if cron is not None:
        try:
            cron = check_cron(cron)
        except ConfigError as exc:
            raise click.BadParameter(str(exc), param_hint="--cron") from None
        due = next_run(cron, parse_now(now_text), zone)
    else:
        due = parse_now(at_text)
    _campaign(cfg, name)  # it must load now, not fail at the scheduled time
    store = open_store(cfg)
    try:
        store.schedule_campaign(name, due, cron)
    finally:
        store.close()
    if cron is not None:
        click.echo(f'{name}: every "{cron}" ({cfg.calendar.timezone}), next run '
                   f"{due.astimezone(zone).isoformat()}")
    else:
        click.echo(f"{name}: scheduled for {due.isoformat()}")


@news.command("scheduled")
@config_option
def news_scheduled(config_path: Path | None) -> None:
    """List the scheduled campaigns (same as `news schedule --list`)."""
    _show_schedules(config_path)


def _show_schedules(config_path: Path | None) -> None:
    from mailbot.app import open_store

    cfg = load_config(config_path)
    zone = cfg.calendar.zone
    store = open_store(cfg)
    try:
        rows = store.scheduled_campaigns()
    finally:
        store.close()
    table = table_("name", "next run", "cron", "last queued")
    for row in rows:
        done = row.cron is None and row.queued_at is not None
        table.add_row(row.name,
                      "-" if done else row.due_at.astimezone(zone).isoformat(timespec="minutes"),
                      escape(row.cron or "(once)"),
                      row.queued_at.astimezone(zone).isoformat(timespec="minutes")
                      if row.queued_at else "-")
    console.print(table)


@news.command("create")
@click.argument("name")
@click.option("--subject-cs", required=True, help="The Czech subject.")
@click.option("--subject-en", default=None, help="The English subject (default: the Czech).")
@click.option("--audience", default="supported", show_default=True,
              help="supported, start, expired_90 or all.")
@click.option("--body-cs", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Czech body (Markdown); default: a skeleton to edit.")
@click.option("--body-en", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="English body (Markdown).")
@config_option
def news_create(name: str, subject_cs: str, subject_en: str | None, audience: str,
                body_cs: Path | None, body_en: Path | None, config_path: Path | None) -> None:
    """Write a new campaign file templates/news/NAME.md (never over an existing one)."""
    from mailbot.news import create_campaign

    cfg = load_config(config_path)
    try:
        path = create_campaign(
            cfg.path(cfg.news.directory), name, subject_cs, subject_en, audience,
            body_cs.read_text(encoding="utf-8") if body_cs else None,
            body_en.read_text(encoding="utf-8") if body_en else None)
    except (MailbotError, UnicodeDecodeError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(str(path))


@news.command("status")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@config_option
def news_status(name: str, as_json: bool, config_path: Path | None) -> None:
    """How many of a campaign's mails are queued, sent, dead or bounced; unsubscribed since.
    For a recurring campaign, one line per run (NAME@YYYYMMDDTHHMM shows one run)."""
    from mailbot.app import open_store

    states = ("queued", "sent", "dead", "bounced", "unsubscribed")
    labels = ("pending", "sent", "failed", "bounced", "unsubscribed")  # outbox state → words
    store = open_store(load_config(config_path))
    try:
        counts = store.campaign_status(name)
        runs = {run: store.campaign_status(run)
                for run in ([] if "@" in name else store.campaign_runs(name))}
    finally:
        store.close()
    if not runs:
        if as_json:
            click.echo(json.dumps(counts))
            return
        table = table_("state", "mails")
        for state, label in zip(states, labels):
            table.add_row(label, str(counts.get(state, 0)))
        console.print(table)
        return
    if any(counts.values()):  # also sent once under its own name
        runs = {name: counts, **runs}
    if as_json:
        click.echo(json.dumps(runs))
        return
    table = table_("campaign", *labels)
    for run, run_counts in runs.items():
        table.add_row(run, *(str(run_counts.get(state, 0)) for state in states))
    console.print(table)


# --- replay -----------------------------------------------------------------------------


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Decide only; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message.")
@click.option("--now", "now_text", default=None, help="The clock, ISO-8601 with offset.")
@click.option(
    "--licenses",
    "licenses_csv",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Use this registry CSV (dry-run: instead of the store; live: imported first).",
)
@config_option
def replay(
    paths: tuple[Path, ...],
    dry_run: bool,
    as_json: bool,
    now_text: str | None,
    licenses_csv: Path | None,
    config_path: Path | None,
) -> None:
    """Run .eml files, directories, mbox files or Maildirs through the decision path."""
    from mailbot.ingest.files import iter_messages
    from mailbot.registry import DictRegistry, read_license_file
    from mailbot.replay import replay_dry, replay_live

    cfg = load_config(config_path)
    now = parse_now(now_text)
    messages = iter_messages(paths)
    counts: dict[str, int] = {}
    worker = None
    if dry_run:
        if licenses_csv is not None:
            records, errors = read_license_file(licenses_csv)
            for e in errors:
                err_console.print(f"{licenses_csv}: {e}", highlight=False)
            registry = DictRegistry({r.license: r for r in records})
        else:
            registry = DictRegistry(_read_only_registry(cfg))
        results = replay_dry(messages, cfg, registry, now)
    else:
        from mailbot.app import open_store
        from mailbot.worker import Worker

        store = open_store(cfg)
        if licenses_csv is not None:
            records, errors = read_license_file(licenses_csv)
            store.upsert_licenses(records)
        worker = Worker.from_config(cfg, store, clock=lambda: now)
        results = replay_live(messages, worker, store, now)
    try:
        for r in results:
            counts[r.decision.kind.value] = counts.get(r.decision.kind.value, 0) + 1
            if as_json:
                click.echo(json.dumps(r.as_json(), ensure_ascii=False))
            else:
                ref = f" {r.ticket_ref}" if r.ticket_ref else ""
                click.echo(f"{r.file}: {r.decision.kind.value}{ref} ({', '.join(r.decision.hits)})")
    finally:
        if worker is not None:
            worker.close()
    if not as_json:
        summary = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
        click.echo(f"replayed {sum(counts.values())} message(s): {summary}")


def _read_only_registry(cfg: config_mod.Config) -> dict[str, Any]:
    """The stored registry without creating or migrating a database (dry-run writes nothing)."""
    from sqlalchemy.exc import SQLAlchemyError

    from mailbot.store import Store

    url = cfg.database_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return {}
    store = Store.from_url(url)
    try:
        return store.license_snapshot()
    except SQLAlchemyError:
        return {}
    finally:
        store.close()


# --- outbox / quarantine / status ---------------------------------------------------------


def _open(config_path: Path | None) -> Any:
    from mailbot.app import open_store

    return open_store(load_config(config_path))


@cli.group()
def outbox() -> None:
    """Outgoing replies."""


@outbox.command("list")
@click.option("--state", default=None, help="queued, sent, dead, bounced")
@click.option("--limit", default=50, show_default=True)
@config_option
def outbox_list(state: str | None, limit: int, config_path: Path | None) -> None:
    """List outbox rows, newest first."""
    store = _open(config_path)
    table = table_("id", "state", "kind", "to", "attempts", "next attempt", "last error")
    for r in store.list_outbox(state, limit):
        table.add_row(str(r.id), r.state, r.kind, ", ".join(r.rcpt_to), str(r.attempts),
                      r.next_attempt_at.isoformat(timespec="seconds"), (r.last_error or "")[:60])
    console.print(table)


@outbox.command("show")
@click.argument("outbox_id", type=int)
@config_option
def outbox_show(outbox_id: int, config_path: Path | None) -> None:
    """Print one outbox message with its delivery state."""
    store = _open(config_path)
    r = store.get_outbox(outbox_id)
    if r is None:
        raise click.ClickException(f"no outbox message {outbox_id}")
    click.echo(f"# state={r.state} attempts={r.attempts} reply={r.server_reply!r} "
               f"error={r.last_error!r}")
    click.echo(r.raw.decode("utf-8", "replace"))


@outbox.command("retry")
@click.argument("outbox_ids", type=int, nargs=-1, required=True)
@config_option
def outbox_retry(outbox_ids: tuple[int, ...], config_path: Path | None) -> None:
    """Queue dead messages again, due now."""
    n = _open(config_path).retry_outbox(outbox_ids)
    click.echo(f"requeued {n} message(s)")


@cli.group()
def quarantine() -> None:
    """Messages that could not be parsed or decided."""


@quarantine.command("list")
@click.option("--limit", default=50, show_default=True)
@config_option
def quarantine_list(limit: int, config_path: Path | None) -> None:
    """List quarantined messages with the reason."""
    store = _open(config_path)
    table = table_("id", "received", "from", "origin", "error")
    for r in store.list_inbound("quarantined", limit):
        last = (r.error or "").strip().splitlines()[-1:] or [""]
        table.add_row(str(r.id), r.received_at.isoformat(timespec="seconds"), r.sender or "",
                      r.origin, last[0][:80])
    console.print(table)


@quarantine.command("show")
@click.argument("inbound_id", type=int)
@click.option("--raw", is_flag=True, help="Print the raw message instead of the error.")
@config_option
def quarantine_show(inbound_id: int, raw: bool, config_path: Path | None) -> None:
    """Print a quarantined message's traceback (or raw bytes)."""
    row = _open(config_path).get_inbound(inbound_id)
    if row is None or row.state != "quarantined":
        raise click.ClickException(f"inbound message {inbound_id} is not quarantined")
    click.echo(row.raw.decode("utf-8", "replace") if raw else (row.error or ""))


@quarantine.command("retry")
@click.argument("inbound_ids", type=int, nargs=-1, required=True)
@config_option
def quarantine_retry(inbound_ids: tuple[int, ...], config_path: Path | None) -> None:
    """Decide quarantined messages again (after a fix)."""
    from mailbot.worker import Worker

    cfg = load_config(config_path)
    store = _open(config_path)
    n = store.requeue_inbound(inbound_ids)
    worker = Worker.from_config(cfg, store)
    try:
        while worker.run_once(50):
            pass
    finally:
        worker.close()
    click.echo(f"requeued {n} message(s)")
    for inbound_id in inbound_ids:
        rec = store.decision_for(inbound_id)
        click.echo(f"  {inbound_id}: {rec.kind if rec else 'still quarantined'}")


@cli.command()
@config_option
def status(config_path: Path | None) -> None:
    """Queue depths and the oldest unsent reply."""
    store = _open(config_path)
    inbound = store.count_inbound()
    out = store.count_outbox()
    click.echo("inbound:  " + (", ".join(f"{k}={v}" for k, v in sorted(inbound.items())) or "empty"))
    click.echo("outbox:   " + (", ".join(f"{k}={v}" for k, v in sorted(out.items())) or "empty"))
    oldest = store.oldest_unsent()
    if oldest is not None:
        click.echo(f"oldest unsent reply: {oldest.isoformat(timespec='seconds')}")
    dead = out.get("dead", 0)
    if dead:
        click.echo(f"dead replies: {dead} (mailbot outbox list --state dead)")
    for cp in store.imap_checkpoints():
        line = (f"intake {cp.mailbox}: uidvalidity={cp.uidvalidity} last_uid={cp.last_uid} "
                f"updated {cp.updated_at.isoformat(timespec='seconds')}")
        if cp.last_error:
            when = cp.last_error_at.isoformat(timespec="seconds") if cp.last_error_at else "?"
            line += f"; last error {when}: {cp.last_error[:120]}"
        click.echo(line)


# --- tickets ------------------------------------------------------------------------------

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


def _open_store(cfg: config_mod.Config) -> Store:
    from mailbot.app import open_store

    return open_store(cfg)


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


def _event_json(e: TicketEvent) -> dict[str, object]:
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
    store = _open_store(cfg)
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
    store = _open_store(cfg)
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
    store = _open_store(cfg)
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
    store = _open_store(load_config(config_path))
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
    store = _open_store(load_config(config_path))
    try:
        if not store.assign_ticket(number, name, by=by):
            raise click.ClickException(f"no ticket {number}")
    finally:
        store.close()
    click.echo(f"assigned {number} to {name} (by {by})")


# --- sla ----------------------------------------------------------------------------------


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
@click.option("--now", "now_text", default=None, hidden=True,
              help="The clock, ISO-8601 with offset (for tests).")
@config_option
def sla_report_command(date_from: datetime | None, date_to: datetime | None, as_csv: bool,
                       as_json: bool, now_text: str | None, config_path: Path | None) -> None:
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
    store = _open_store(cfg)
    try:
        rows = store.sla_rows(start, end)
    finally:
        store.close()
    report = sla_report(rows, calendar, now, period=(first, last))
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


def main() -> None:
    try:
        cli(standalone_mode=True)
    except MailbotError as exc:
        err_console.print(f"error: {exc}", highlight=False)
        sys.exit(1)
