"""Reading stored mail from files: `.eml` files, directories of them, mbox files, Maildirs.

Used by `mailbot replay`. Yields raw bytes exactly as stored (mbox `From ` lines removed
and `>From ` quoting undone by the stdlib mailbox module).
"""

from __future__ import annotations

import mailbox
from collections.abc import Iterable, Iterator
from pathlib import Path


def _is_maildir(path: Path) -> bool:
    return all((path / sub).is_dir() for sub in ("cur", "new", "tmp"))


def _is_mbox(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(5) == b"From "


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
        if path.is_dir():
            if _is_maildir(path):
                md = mailbox.Maildir(path, factory=None, create=False)
                for key in sorted(md.keys()):
                    yield f"{path}/{key}", md.get_bytes(key)
                continue
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                if child.name.startswith(".") or child.suffix in (".jsonl", ".md", ".csv"):
                    continue
                yield from iter_messages([child])
            continue
        if _is_mbox(path):
            box = mailbox.mbox(path, factory=None, create=False)
            keys = box.keys()
            if len(keys) == 1:  # one message saved with its envelope "From " line
                yield str(path), box.get_bytes(keys[0])
                continue
            for i, key in enumerate(keys):
                yield f"{path}#{i + 1}", box.get_bytes(key)
            continue
        yield str(path), path.read_bytes()
