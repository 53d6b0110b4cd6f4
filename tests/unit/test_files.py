"""mailbot.ingest.files: what `mailbot replay` reads from files, directories, mboxes and
Maildirs."""

from __future__ import annotations

import mailbox
from pathlib import Path

import pytest

from mailbot.ingest.files import iter_messages

ONE = b"From: a@example.org\nSubject: one\n\nbody one\n"
TWO = b"From: b@example.org\nSubject: two\n\nFrom here on\n"


def test_a_directory_of_files_and_mboxes_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "b.eml").write_bytes(ONE)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.eml").write_bytes(TWO)
    box = mailbox.mbox(tmp_path / "a.mbox")
    box.add(ONE)
    box.add(TWO)
    box.flush()
    single = mailbox.mbox(tmp_path / "d.mbox")
    single.add(TWO)
    single.flush()
    for skipped in (".hidden", "labels.jsonl", "README.md", "licenses.csv"):
        (tmp_path / skipped).write_bytes(ONE)

    found = list(iter_messages([tmp_path]))

    assert [label for label, _ in found] == [
        f"{tmp_path}/a.mbox#1", f"{tmp_path}/a.mbox#2", str(tmp_path / "b.eml"),
        str(tmp_path / "d.mbox"), str(tmp_path / "sub" / "c.eml")]
    raws = [raw for _, raw in found]
    assert raws[2] == ONE and raws[4] == TWO  # plain files exactly as stored
    assert raws[0].startswith(b"From: a@") and b"Subject: one" in raws[0]
    assert raws[1].startswith(b"From: b@") and b"\n>From here on" in raws[1]  # as written
    assert raws[3].startswith(b"From: b@") and not raws[3].startswith(b"From -")


def test_a_maildir_and_a_single_file(tmp_path: Path) -> None:
    md = mailbox.Maildir(tmp_path / "md")
    md.add(ONE)
    (tmp_path / "x.eml").write_bytes(TWO)
    found = list(iter_messages([tmp_path / "md", tmp_path / "x.eml"]))
    assert [raw for _, raw in found] == [ONE, TWO]
    assert found[1][0] == str(tmp_path / "x.eml")


def test_a_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        list(iter_messages([tmp_path / "gone"]))
