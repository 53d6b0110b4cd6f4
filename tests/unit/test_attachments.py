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


def test_over_budget_attachment_is_never_written(tmp_path: Path) -> None:
    """The per-ticket budget is checked before writing: a file that does not fit is only
    described (name, size, hash), never written to the store directory."""
    files = AttachmentStore(tmp_path / "store")
    saved, skipped = files.save_within(
        [("a.log", "text/plain", b"a" * 600), ("big.bin", "application/octet-stream", b"b" * 500),
         ("c.log", "text/plain", b"c" * 400)], budget=1000)
    assert [a.filename for a in saved] == ["a.log", "c.log"]
    assert [(a.filename, a.size) for a in skipped] == [("big.bin", 500)]
    assert files.path(saved[0].sha256).exists() and files.path(saved[1].sha256).exists()
    assert not files.path(skipped[0].sha256).exists()


def test_orphan_files_go_only_after_the_grace_period(tmp_path: Path) -> None:
    """Files no row refers to are found once unchanged for the grace period (with left-over
    temporary files); referenced files and young files (a write in flight) stay."""
    import os
    import time

    files = AttachmentStore(tmp_path / "store")
    kept = files.save("kept.log", "text/plain", b"kept")
    old = files.save("old.log", "text/plain", b"old orphan")
    young = files.save("young.log", "text/plain", b"young orphan")
    tmp = files.path(old.sha256).with_name(f".{old.sha256}.999.tmp")
    tmp.write_bytes(b"half")
    day_ago = time.time() - 86_400
    for f in (files.path(kept.sha256), files.path(old.sha256), tmp):
        os.utime(f, (day_ago, day_ago))
    found = files.orphans({kept.sha256}, grace_seconds=3600, limit=100)
    assert sorted(p.name for p, _ in found) == sorted([old.sha256, tmp.name])
    assert files.remove([p for p, _ in found]) == 2
    assert files.path(kept.sha256).exists() and files.path(young.sha256).exists()
    assert not files.path(old.sha256).exists() and not tmp.exists()
    again = files.save("old.log", "text/plain", b"old orphan")  # saved again: young
    assert files.orphans({kept.sha256}, grace_seconds=3600, limit=100) == []
    assert files.path(again.sha256).exists()


def test_attachment_rename_fsyncs_its_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                ) -> None:
    """After the rename, the directory holding the file is fsynced (else a power loss may
    forget the new name even though the file's data was synced)."""
    import os
    import stat

    synced_dirs: list[int] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            synced_dirs.append(st.st_ino)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    files = AttachmentStore(tmp_path / "store")
    saved = files.save("x.log", "text/plain", b"payload")
    assert files.path(saved.sha256).parent.stat().st_ino in synced_dirs


def test_attachments_of_decodes_names_as_the_parser_does() -> None:
    """The attachments relayed from a ticket mail are read from the cheap compat32 tree; their
    names are decoded as `parse` decodes them: encoded words, RFC 2231 and raw 8-bit names in
    the declared charset (the stdlib's accessors would make the last one U+FFFD)."""
    from mailbot.replies.conversation import attachments_of

    raw = (
        "From: a@example.org\r\nTo: podpora@example.org\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain; charset=iso-8859-2\r\n\r\nV\xfdpis v p\xf8\xedloze.\r\n"
        "--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
        'Content-Disposition: attachment; filename="=?utf-8?b?xb7DoWRvc3QucGRm?="\r\n\r\n'
        "JVBERi0=\r\n"
        "--b\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Disposition: attachment; filename*=utf-8''sm%C4%9Bny.log\r\n\r\nlog\r\n"
        "--b\r\nContent-Type: image/jpeg\r\nContent-Transfer-Encoding: base64\r\n"
        'Content-Disposition: attachment; filename="Vr\xe1tnice  1.jpg"\r\n\r\n/9j/\r\n'
        "--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment\r\n\r\n"
        "data\r\n--b--\r\n"
    ).encode("latin-1")
    found = attachments_of(raw)
    assert [(name, ctype, charset) for name, ctype, _, charset in found] == [
        ("žádost.pdf", "application/pdf", None),
        ("směny.log", "text/plain", "utf-8"),
        ("Vrátnice 1.jpg", "image/jpeg", None),
        ("attachment", "application/octet-stream", None),
    ]
    assert found[0][2] == b"%PDF-" and found[2][2] == b"\xff\xd8\xff"
    assert attachments_of(raw, limit=6) == found[:1]
