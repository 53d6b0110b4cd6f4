"""Imports point one way: pure stages never import I/O libraries or the store."""

from __future__ import annotations

import ast
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


def test_no_sql_built_from_strings() -> None:
    """No f-string or %-formatted SQL passed to text() (SQL injection gate)."""
    for f in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "text":
                arg = node.args[0] if node.args else None
                assert not isinstance(arg, ast.JoinedStr | ast.BinOp), f"{f}: dynamic SQL"
