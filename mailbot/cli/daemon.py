"""`mailbot run`, `check-config` and `db upgrade`: the daemon, its configuration, its schema."""

from __future__ import annotations

from pathlib import Path

import click

from mailbot.cli.base import cli, config_option, load_config, store_for


@cli.command()
@config_option
def run(config_path: Path | None) -> None:
    """Run the daemon: intakes, worker, outbox sender (stop with SIGTERM or Ctrl-C)."""
    import asyncio
    import signal
    import threading

    from mailbot import app, memory

    memory.tune()  # before the daemon starts its threads
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

    store = store_for(load_config(config_path))
    click.echo(f"schema at revision {migrations.current(store.engine)}")
