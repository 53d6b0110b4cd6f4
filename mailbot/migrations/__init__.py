"""Alembic migrations, run programmatically (`mailbot db upgrade`, and at every start).

On PostgreSQL the upgrade holds an advisory lock, so of several daemons starting at once
exactly one migrates and the others wait, then find nothing to do.

A schema already at the head is recognised by one query, without importing Alembic (and
Mako): the daemon does not carry them in memory for a check that finds nothing to do.
Revisions are numbered `NNNN` in files `versions/NNNN_*.py`, so the head is the highest
number (a test holds this against Alembic's own answer).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

    from mailbot.config import Config
    from mailbot.store import Store

HERE = Path(__file__).resolve().parent
_LOCK_KEY = 0x6D61696C626F74  # "mailbot"
_REVISION_FILE = re.compile(r"(\d{4})_\w+\.py")


def open_store(config: Config, *, migrate: bool = True) -> Store:
    """The configured store, with the schema brought up to date unless `migrate` is False
    (here rather than in mailbot.app, so that commands needing only the store do not import
    the daemon's servers)."""
    from mailbot.store import Store

    store = Store.from_url(
        config.database_url, echo=config.store.echo, pool_size=config.store.pool_size
    )
    if migrate:
        upgrade(store.engine)
    return store


def numbered_head() -> str:
    """The head revision read from the file names (no Alembic import)."""
    return max(m.group(1) for p in (HERE / "versions").iterdir()
               if (m := _REVISION_FILE.fullmatch(p.name)))


def at_head(engine: Engine) -> bool:
    """Whether the database's schema is already at this code's head revision."""
    try:
        with engine.connect() as conn:
            found = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    except SQLAlchemyError:  # no such table yet: a new database
        return False
    return found == [numbered_head()]


def alembic_config(engine: Engine) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` (idempotent)."""
    if revision == "head" and at_head(engine):
        return
    from alembic import command

    cfg = alembic_config(engine)
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _LOCK_KEY})
            try:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
                conn.commit()
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
                conn.commit()
        return
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def head() -> str:
    """The revision this code's models are at."""
    from alembic.script import ScriptDirectory

    found = ScriptDirectory(str(HERE)).get_current_head()
    assert found is not None
    return found


def current(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
