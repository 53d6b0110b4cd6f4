"""Attachments kept outside the database: content-addressed files under one directory.

A file is named by the SHA-256 of its bytes (`ab/abcdef…`), written to a temporary name,
fsynced and renamed, so a crash leaves either the whole file or none, and saving the same
attachment again (a retried message) writes nothing new. The database keeps one row per
attachment with the sanitised name; names never become paths except through `export`,
which writes inside the target directory only.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]+")
_RESERVED = re.compile(r"(?i)^(con|prn|aux|nul|com\d|lpt\d)(\..*)?$")
NAME_LIMIT = 150


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
        digest = hashlib.sha256(payload).hexdigest()
        target = self.path(digest)
        if not (target.exists() and target.stat().st_size == len(payload)):
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{digest}.{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        return SavedAttachment(safe_filename(filename), content_type, len(payload), digest)

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
