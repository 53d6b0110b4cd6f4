"""Reading stored mail from files: `.eml` files, directories of them, mbox files, Maildirs.

Used by `mailbot replay`. Yields raw bytes exactly as stored; of an mbox message, without
its envelope `From ` line (the stdlib mailbox module's reading: a body line its writer
quoted as `>From ` stays quoted).
"""

from __future__ import annotations

import mailbox
from collections.abc import Iterable, Iterator
from pathlib import Path


def _is_maildir(path: Path) -> bool:
    return all((path / sub).is_dir() for sub in ("cur", "new", "tmp"))


def _single_message(path: Path) -> bytes | None:
    """The bytes of the file at `path`, or None when it is an mbox (starts with "From "),
    read by the mailbox module instead. One open either way (replay reads thousands)."""
    with path.open("rb") as f:
        if f.read(5) == b"From ":
            return None
        f.seek(0)
        return f.read()


def iter_messages(paths: Iterable[Path]) -> Iterator[tuple[str, bytes]]:
    """(label, raw bytes) for every message under `paths`, in a stable order.

    A directory is read as a Maildir when it has cur/new/tmp, else every regular file in it
    (sorted by name, recursively) is one message or an mbox.

    Raises:
        FileNotFoundError: a path does not exist.
    """
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or directory")
        if not path.is_dir():
            yield from _file_messages(path)
        elif _is_maildir(path):
            md = mailbox.Maildir(path, factory=None, create=False)
            for key in sorted(md.keys()):
                yield f"{path}/{key}", md.get_bytes(key)
        else:
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                if not (child.name.startswith(".") or child.suffix in (".jsonl", ".md", ".csv")):
                    yield from _file_messages(child)


def _file_messages(path: Path) -> Iterator[tuple[str, bytes]]:
    """The message in the file at `path`, or each message of it when it is an mbox."""
    raw = _single_message(path)
    if raw is not None:
        yield str(path), raw
        return
    box = mailbox.mbox(path, factory=None, create=False)
    keys = box.keys()
    if len(keys) == 1:  # one message saved with its envelope "From " line
        yield str(path), box.get_bytes(keys[0])
        return
    for i, key in enumerate(keys):
        yield f"{path}#{i + 1}", box.get_bytes(key)
