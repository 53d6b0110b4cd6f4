"""Imports point one way: pure stages never import I/O libraries or the store."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "mailbot"
IO_MODULES = ("sqlalchemy", "asyncio", "aiosmtpd", "imapclient", "smtplib", "mailbot.store")
PURE = {
    "classify": IO_MODULES + ("mailbot.ingest", "mailbot.replies", "mailbot.worker"),
    "replies/render.py": IO_MODULES + ("mailbot.classify",),
    "ingest/parse.py": IO_MODULES + ("mailbot.classify",),
    "domain.py": IO_MODULES + ("mailbot.config",),
}


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("target", sorted(PURE))
def test_pure_modules_do_no_io(target: str) -> None:
    """Pure modules import no database, network or event-loop code."""
    path = PKG / target
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
    assert files, target
    for f in files:
        for name in imports_of(f):
            for banned in PURE[target]:
                assert not (name == banned or name.startswith(banned + ".")), (
                    f"{f.relative_to(PKG)} imports {name}"
                )


def test_only_parse_imports_mailparser() -> None:
    """mail-parser is used in exactly one module, ingest/parse.py."""
    users = [
        f.relative_to(PKG).as_posix()
        for f in PKG.rglob("*.py")
        if any(n == "mailparser" or n.startswith("mailparser.") for n in imports_of(f))
    ]
    assert users == ["ingest/parse.py"]


SQL_CALLS = frozenset({"text", "execute", "executemany", "executescript", "exec_driver_sql"})
"""Calls whose first argument is SQL text: sqlalchemy's text() (bare or as sa.text), and the
execute methods of connections, cursors and alembic's `op`."""
SQL_BUILT_ALLOWED = {
    "migrations/versions/0009_event_names.py": "interpolates its own constant RENAMED table",
}


def sql_calls(tree: ast.AST) -> Iterator[tuple[ast.Call, bool]]:
    """Each call that takes SQL text, and whether that text is built at run time (f-string,
    `%` or `+`, or str.format)."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else (
            func.attr if isinstance(func, ast.Attribute) else None)
        if name not in SQL_CALLS:
            continue
        arg = node.args[0]
        built = isinstance(arg, ast.JoinedStr | ast.BinOp) or (
            isinstance(arg, ast.Call) and isinstance(arg.func, ast.Attribute)
            and arg.func.attr == "format")
        yield node, built


def test_sql_check_recognises_built_sql() -> None:
    """The check itself: each way of building SQL text is caught, fixed text and bound
    parameters are not."""
    built = ['text(f"SELECT {x}")', 'sa.text("SELECT %s" % x)', 'op.execute("DROP " + t)',
             'conn.exec_driver_sql("SELECT {}".format(x))', 'cur.execute(f"PRAGMA {p}")']
    fixed = ['text("SELECT :k")', 'conn.execute(text("SELECT 1"), {"k": 1})',
             'op.execute("UPDATE t SET a = 1")', 's.execute(select(T).where(T.id == x))']
    for code in built:
        assert [b for _, b in sql_calls(ast.parse(code))] == [True], code
    for code in fixed:
        assert not any(b for _, b in sql_calls(ast.parse(code))), code


def test_no_sql_built_from_strings() -> None:
    """No f-string, %-, +- or format()-built SQL text passed to text() or an execute method
    (SQL injection gate), outside the named exceptions (which must still contain one)."""
    seen, built_in = 0, set()
    for f in PKG.rglob("*.py"):
        rel = f.relative_to(PKG).as_posix()
        for node, built in sql_calls(ast.parse(f.read_text(encoding="utf-8"))):
            seen += 1
            if built:
                built_in.add(rel)
                assert rel in SQL_BUILT_ALLOWED, f"{rel}:{node.lineno}: SQL built from strings"
    assert seen >= 10, f"only {seen} SQL calls found: the check no longer matches the code"
    assert built_in == set(SQL_BUILT_ALLOWED), built_in


def test_the_daemon_loads_the_listener_and_campaign_markup_when_used() -> None:
    """Importing the daemon (the CLI and mailbot.app) loads neither aiosmtpd (with attrs)
    nor Markdown: a daemon taking mail over IMAP alone, or sending no campaign, never
    carries them."""
    import subprocess
    import sys

    code = ("import sys, mailbot.cli, mailbot.app\n"
            "print(sorted(m for m in ('aiosmtpd', 'attr', 'markdown') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    assert out.strip() == "[]"
