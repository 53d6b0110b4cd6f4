"""`mailbot news`: preview, send, schedule, create campaigns and follow their sending."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from mailbot import config as config_mod
from mailbot.cli.base import (
    cli,
    config_option,
    console,
    err_console,
    load_config,
    parse_now,
    store_for,
    table_,
)
from mailbot.errors import ConfigError, MailbotError

if TYPE_CHECKING:
    from mailbot.config import Config
    from mailbot.store import Store


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
    from mailbot.news import NewsRenderer, recipients

    cfg = load_config(config_path)
    campaign = _campaign(cfg, name)
    now = parse_now(now_text)
    store = store_for(cfg)
    try:
        people = recipients(store, campaign, now)
    finally:
        store.close()
    click.echo(f"{name}: audience {campaign.audience}, {len(people)} recipient(s)")
    renderer = NewsRenderer(cfg)
    for i, (contact, record) in enumerate(people[:limit]):
        made = renderer.render(campaign, contact, record, "0" * 20, now, "preview")
        if made is None:
            continue
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / f"{i + 1}.eml").write_bytes(made.raw)
        click.echo(f"  {contact.email} ({contact.language}, {record.license})")
    if test_to is not None:
        if not people:
            raise click.ClickException("no recipient to render the test mail for")
        contact, record = people[0]
        test = dataclasses.replace(
            campaign, subjects={k: f"[TEST] {v}" for k, v in campaign.subjects.items()})
        made = renderer.render(test, dataclasses.replace(contact, email=test_to), record,
                               "0" * 20, now, "preview")
        if made is None:
            raise click.ClickException(f"--to {test_to!r}: not a valid address")
        _send_now(cfg, made.raw, test_to)


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
    from mailbot.news import queue_campaign

    cfg = load_config(config_path)
    campaign = _campaign(cfg, name)
    store = store_for(cfg)
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
    store = store_for(cfg)
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
    cfg = load_config(config_path)
    zone = cfg.calendar.zone
    store = store_for(cfg, readonly=True)
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
    states = ("queued", "sent", "dead", "bounced", "unsubscribed")
    labels = ("pending", "sent", "failed", "bounced", "unsubscribed")  # outbox state → words
    store = store_for(load_config(config_path), readonly=True)
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
