"""`mailbot purge [--dry-run] [--json]`: apply `[retention]` now (see `mailbot.retention`)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mailbot.cli.base import cli, config_option, console, load_config, parse_now, store_for, table_


@cli.command()
@config_option
@click.option("--dry-run", is_flag=True, help="Only count what would be removed.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a table.")
@click.option("--now", default=None, metavar="ISO", help="Pretend it is this time (tests).")
def purge(config_path: Path | None, dry_run: bool, as_json: bool, now: str | None) -> None:
    """Remove what [retention] lets go: raw mail, attachments of closed tickets, orphan
    files. One batch (retention.batch) per kind; run again while it says more is left."""
    from mailbot.retention import purge as run_purge

    cfg = load_config(config_path)
    store = store_for(cfg)
    try:
        report = run_purge(cfg, store, parse_now(now), dry_run=dry_run)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(report.as_dict()))
        return
    verb = "would remove" if dry_run else "removed"
    t = table_("what", "count", "bytes")
    t.add_row("raw inbound mail", str(report.raw_messages), str(report.raw_bytes))
    t.add_row("attachments of closed tickets", str(report.attachments),
              str(report.attachment_bytes))
    t.add_row("attachment files (orphans)", str(report.files), str(report.file_bytes))
    console.print(f"purge {verb}:")
    console.print(t)
    if report.more:
        console.print("more is left: run it again")
