"""Attachment files: sanitised names, content addressing, export confined to its directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailbot.attachments import AttachmentStore, safe_filename


@pytest.mark.parametrize(("name", "expected"), [
    ("report.pdf", "report.pdf"),
    ("../../etc/passwd", "passwd"),
    ("..\\..\\Windows\\system32\\evil.dll", "evil.dll"),
    ("C:\\Users\\x\\log.txt", "log.txt"),
    ("/absolute/path.txt", "path.txt"),
    ("..", "attachment"),
    ("", "attachment"),
    (".hidden", "hidden"),
    ("a\x00b\r\nc.txt", "abc.txt"),
    ("CON", "attachment_CON"),
    ("nul.txt", "attachment_nul.txt"),
    ("výpis služby (1).log", "výpis služby (1).log"),
    ("a<b>c:d|e?.txt", "a_b_c_d_e_.txt"),
    ("right\u202etxt.exe", "righttxt.exe"),
])
def test_safe_filename(name: str, expected: str) -> None:
    assert safe_filename(name) == expected


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.text(max_size=400))
def test_safe_filename_is_always_one_plain_name(name: str) -> None:
    safe = safe_filename(name)
    assert safe and len(safe) <= 150
    assert "/" not in safe and "\\" not in safe and "\x00" not in safe
    assert safe not in (".", "..") and not safe.startswith(".")


def test_save_is_content_addressed_and_export_stays_inside(tmp_path: Path) -> None:
    files = AttachmentStore(tmp_path / "store")
    a = files.save("../../x.log", "text/plain", b"hello")
    b = files.save("other.log", "text/plain", b"hello")
    assert a.sha256 == b.sha256 and files.path(a.sha256).read_bytes() == b"hello"
    assert a.filename == "x.log" and a.size == 5
    out = tmp_path / "export"
    written = files.export([("../../x.log", a.sha256), ("x.log", b.sha256), ("/etc/x.log", a.sha256)], out)
    assert [p.name for p in written] == ["x.log", "x-2.log", "x-3.log"]
    assert all(p.parent == out.resolve() for p in written)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "store"]
    with pytest.raises(ValueError):
        files.path("../../etc/passwd")
