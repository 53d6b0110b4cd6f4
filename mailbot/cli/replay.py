"""`mailbot replay`: run stored mail files through the decision path (dry or live)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mailbot import config as config_mod
from mailbot.cli.base import cli, config_option, err_console, load_config, parse_now, store_for

if TYPE_CHECKING:
    from mailbot.isolation import WorkerPool


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
    cfg = load_config(config_path)
    pool = None
    if not dry_run:
        from mailbot.isolation import WorkerPool

        # Spawned first: the decision processes import and compile while this one imports
        # the store and opens it (about half a second of start-up).
        pool = WorkerPool.from_config(cfg)
        if pool is not None:
            pool.spawn()
    try:
        now = parse_now(now_text)
        _replay(paths, dry_run, as_json, now, licenses_csv, cfg, pool)
    finally:
        if pool is not None:
            pool.close()


def _replay(paths: tuple[Path, ...], dry_run: bool, as_json: bool, now: datetime,
            licenses_csv: Path | None, cfg: config_mod.Config, pool: WorkerPool | None) -> None:
    from mailbot import memory
    from mailbot.ingest.files import iter_messages
    from mailbot.registry import DictRegistry, read_license_file
    from mailbot.replay import replay_dry, replay_live

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
        from mailbot.worker import Worker

        store = store_for(cfg)
        if licenses_csv is not None:
            records, errors = read_license_file(licenses_csv)
            store.upsert_licenses(records)
        worker = Worker.from_config(cfg, store, clock=lambda: now, pool=pool)
        worker.warm()
        memory.settled()
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
