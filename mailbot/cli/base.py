"""The `cli` group and what its commands share: consoles, tables, `--config`, the clock."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from mailbot import config as config_mod
from mailbot.errors import ConfigError

if TYPE_CHECKING:
    from mailbot.store import Store

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


_CONFIG_KEY = "mailbot.config"


def _config_fallback(ctx: click.Context, _param: click.Parameter, value: Path | None) -> Path | None:
    """A command's own `--config` wins; else the one given before the command (or $MAILBOT_CONFIG)."""
    if value is not None:
        return value
    root: Path | None = ctx.find_root().meta.get(_CONFIG_KEY)
    return root


def config_option(f: F) -> F:
    """`--config PATH` after the command; `mailbot --config PATH CMD` and $MAILBOT_CONFIG also work."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        callback=_config_fallback,
        help="Config file (default: $MAILBOT_CONFIG, else config/mailbot.toml).",
    )(f)


def load_config(path: Path | None, *, learned: bool = True) -> config_mod.Config:
    """The configuration at `path` (default: the repository's); `learned` False leaves the
    learned model file unread (`mailbot model train` writes it)."""
    try:
        return config_mod.load(path, learned=learned)
    except ConfigError as exc:
        raise click.ClickException(f"config error: {exc}") from None


def store_for(cfg: config_mod.Config, *, readonly: bool = False) -> Store:
    """The configured store, migrated (SQLAlchemy is imported only when a command needs it).

    A `readonly` command opens it as it is and never migrates: it stops with a clear error
    when the schema is not the one this code needs (older: run `mailbot db upgrade`)."""
    from mailbot import migrations

    store = migrations.open_store(cfg, migrate=not readonly)
    if readonly:
        try:
            found, needed = migrations.current(store.engine), migrations.head()
        except Exception:
            store.close()
            raise
        if found != needed:
            store.close()
            raise click.ClickException(
                f"the database schema is at revision {found or 'none (empty database)'}, but "
                f"this mailbot needs {needed}: run `mailbot db upgrade` first (read-only "
                "commands do not migrate)")
    return store


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
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="MAILBOT_CONFIG",
    default=None,
    help="Config file for every command (default: config/mailbot.toml).",
)
@click.pass_context
def cli(ctx: click.Context, log_level: str, config_path: Path | None) -> None:
    """mailbot: the support mailbox daemon and its tools."""
    from mailbot import logs

    ctx.meta[_CONFIG_KEY] = config_path
    logs.setup(log_level.upper())

