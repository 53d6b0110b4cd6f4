"""Attachments kept outside the database: content-addressed files under one directory.

A file is named by the SHA-256 of its bytes (`ab/abcdef…`), written to a temporary name,
fsynced, renamed and its directory fsynced, so a crash leaves either the whole file or none,
and saving the same attachment again (a retried message) writes nothing new (it only renews
the file's mtime). The database keeps one row per attachment with the sanitised name; names
never become paths except through `export`, which writes inside the target directory only.

Files are written before the row that refers to them commits, so a file no row refers to is
either a write in flight or an orphan (a transaction that failed, a row removed by
retention): `orphans` finds only those older than a grace period.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import unicodedata
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from mailbot.domain import wire


_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]+")
_RESERVED = re.compile(r"(?i)^(con|prn|aux|nul|com\d|lpt\d)(\..*)?$")
NAME_LIMIT = 150


FileAttachment = tuple[str, str, bytes, "str | None"]
"""An attachment read from a message: (cleaned filename, content type, bytes, charset of a
text part)."""


def safe_filename(name: str, default: str = "attachment") -> str:
    """A file name without directories, control or reserved characters, or leading dots."""
    name = unicodedata.normalize("NFC", name or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cf", "Zl", "Zp"))
    name = _UNSAFE.sub("_", name).strip(" .")
    if not name or _RESERVED.match(name):
        name = f"{default}_{name}" if name else default
    if len(name) > NAME_LIMIT:
        stem, dot, ext = name.rpartition(".")
        ext = ext[:20] if dot else ""
        name = (stem if dot else name)[: NAME_LIMIT - len(ext) - 1] + (f".{ext}" if ext else "")
    return name


def _fsync_dir(directory: Path) -> None:
    """Make a directory's entries (a rename, a new file) durable."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@wire
@dataclass(frozen=True, slots=True)
class SavedAttachment:
    """An attachment written to the store directory."""

    filename: str
    content_type: str
    size: int
    sha256: str


class AttachmentStore:
    """The directory of attachment files."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, sha256: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.directory / sha256[:2] / sha256

    def save(self, filename: str, content_type: str, payload: bytes) -> SavedAttachment:
        """Write `payload` (once per content) durably: the file, then its directory."""
        digest = hashlib.sha256(payload).hexdigest()
        target = self.path(digest)
        if target.exists() and target.stat().st_size == len(payload):
            os.utime(target)  # a row will refer to it: not an orphan for the grace period
        else:
            created = not target.parent.exists()
            target.parent.mkdir(parents=True, exist_ok=True)
            if created:
                _fsync_dir(self.directory)
            tmp = target.with_name(f".{digest}.{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
            _fsync_dir(target.parent)  # the rename itself survives a power loss
        return SavedAttachment(safe_filename(filename), content_type, len(payload), digest)

    def save_within(self, items: Iterable[tuple[str, str, bytes]], budget: int
                    ) -> tuple[list[SavedAttachment], list[SavedAttachment]]:
        """Save (name, content type, bytes) in order while their total stays within `budget`
        bytes; returns (saved, left out). What is left out is never written."""
        saved: list[SavedAttachment] = []
        skipped: list[SavedAttachment] = []
        used = 0
        for name, ctype, payload in items:
            if used + len(payload) > budget:
                skipped.append(SavedAttachment(safe_filename(name), ctype, len(payload),
                                               hashlib.sha256(payload).hexdigest()))
                continue
            saved.append(self.save(name, ctype, payload))
            used += len(payload)
        return saved, skipped

    def orphans(self, referenced: Collection[str], grace_seconds: float, limit: int,
                now: float | None = None) -> list[tuple[Path, int]]:
        """Up to `limit` files (path, size) no row refers to (digest not in `referenced`),
        unchanged for `grace_seconds`: left-over temporary files included."""
        cutoff = (time.time() if now is None else now) - grace_seconds
        found: list[tuple[Path, int]] = []
        if not self.directory.is_dir():
            return found
        for sub in sorted(self.directory.iterdir()):
            if not (sub.is_dir() and re.fullmatch(r"[0-9a-f]{2}", sub.name)):
                continue
            for f in sorted(sub.iterdir()):
                if len(found) >= limit:
                    return found
                try:
                    st = f.stat()
                except FileNotFoundError:
                    continue
                if not f.is_file() or st.st_mtime > cutoff:
                    continue
                if f.name.endswith(".tmp") or f.name not in referenced:
                    found.append((f, st.st_size))
        return found

    def remove(self, files: Iterable[Path], not_newer_than: float | None = None) -> int:
        """Delete files of this store (gone already is fine), except ones changed after
        `not_newer_than` (a save renewed them since); returns how many were deleted."""
        removed = 0
        for f in files:
            if f.parent.parent != self.directory:
                raise ValueError(f"not a file of the attachment store: {f}")
            try:
                if not_newer_than is not None and f.stat().st_mtime > not_newer_than:
                    continue
                f.unlink()
                removed += 1
            except FileNotFoundError:
                pass
        # No directory fsync: a removal a crash undoes is found again as an orphan.
        return removed

    def export(self, items: list[tuple[str, str]], target: Path) -> list[Path]:
        """Copy attachments (name, sha256) into `target` under their sanitised names (a
        number is added on a clash); nothing is written outside `target`."""
        target.mkdir(parents=True, exist_ok=True)
        root = target.resolve()
        written: list[Path] = []
        used: set[str] = set()
        for name, digest in items:
            name = safe_filename(name)
            stem, dot, ext = name.rpartition(".")
            candidate, n = name, 1
            while candidate.lower() in used or (root / candidate).exists():
                n += 1
                candidate = f"{stem}-{n}.{ext}" if dot and stem else f"{name}-{n}"
            used.add(candidate.lower())
            out = (root / candidate).resolve()
            if out.parent != root:  # cannot happen with a safe name; refuse anyway
                raise ValueError(f"refusing to write outside {root}: {out}")
            out.write_bytes(self.path(digest).read_bytes())
            written.append(out)
        return written
