"""Shared fixtures: configs, stores (SQLite and PostgreSQL), and the real test servers
(`smtp_sink`, `dovecot`, `tls_cert` from tests/fixtures/servers.py)."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `tests.*` importable under plain `pytest`

# The CLI's tables are as wide as the terminal (`mailbot.cli.base.console`, sized when it is
# imported): the tests read them at one width whatever terminal runs the suite (pytest-xdist
# sets COLUMNS=80 in its workers, and so does an 80-column terminal).
os.environ["COLUMNS"] = "160"

from mailbot import config as config_mod  # noqa: E402
from mailbot import migrations  # noqa: E402
from mailbot.store import Store  # noqa: E402
from tests.fixtures.servers import *  # noqa: E402,F401,F403

PG_URL = os.environ.get("MAILBOT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture
def base_config(tmp_path: Path) -> config_mod.Config:
    """The embedded default config with the store and sinks moved into `tmp_path`."""
    cfg = config_mod.load(ROOT / "config" / "mailbot.toml")
    return cfg.model_copy(
        update={
            "store": cfg.store.model_copy(update={"url": f"sqlite:///{tmp_path / 'mailbot.db'}",
                                                  "attachments_dir": str(tmp_path / "attachments")}),
            "outbound": cfg.outbound.model_copy(update={"directory": str(tmp_path / "sent")}),
        }
    )


_pg_reason: str | None = None


def postgres_available() -> str | None:
    """None when the test PostgreSQL answers, else the reason it does not."""
    global _pg_reason
    if _pg_reason is None:
        try:
            eng = create_engine(PG_URL, connect_args={"connect_timeout": 3})
            with eng.connect() as c:
                c.execute(text("select 1"))
            eng.dispose()
            _pg_reason = ""
        except (OperationalError, ImportError) as exc:
            _pg_reason = f"PostgreSQL not reachable at {PG_URL}: {str(exc).splitlines()[0]}"
    return _pg_reason or None


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL to a fresh, empty PostgreSQL schema (dropped afterwards)."""
    reason = postgres_available()
    if reason:
        pytest.skip(reason)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as c:
        c.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    with admin.begin() as c:
        c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database on each engine mailbot supports."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """A migrated, empty store on each engine."""
    s = Store.from_url(store_url)
    migrations.upgrade(s.engine)
    yield s
    s.close()


@pytest.fixture
def config(base_config: config_mod.Config, store_url: str) -> config_mod.Config:
    """The default config pointing at the parametrised store."""
    return base_config.model_copy(
        update={"store": base_config.store.model_copy(update={"url": store_url})}
    )
