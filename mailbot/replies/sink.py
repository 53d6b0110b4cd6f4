"""A directory as the outbound transport: one `.eml` per message (the default for `make run`).

Each file is written to a hidden temporary name, fsynced, renamed into place and the directory
fsynced, so a reader globbing ``*.eml`` never sees a half-written message and a file that
exists survived a crash. The envelope is kept in two leading headers, ``X-Envelope-From`` and
``X-Envelope-To``, the way an MDA prepends ``Return-Path``. File names sort in sending order:
``<unix-ns>-<counter>-<sanitised Message-ID>.eml``.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import threading
import time
from collections.abc import Sequence
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path

from mailbot.errors import TransientDeliveryError
from mailbot.replies.smtp import check_envelope, to_crlf

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+=-]+")
_MAX_ID_CHARS = 120


def _message_id(msg_bytes: bytes) -> str | None:
    head, _, _ = msg_bytes.partition(b"\r\n\r\n")
    try:
        value = BytesHeaderParser(policy=compat32).parsebytes(head + b"\r\n\r\n")["Message-ID"]
    except Exception:  # a header we cannot read only costs the nice file name
        return None
    return str(value) if value is not None else None


def file_stem(message_id: str | None) -> str:
    """A file-name-safe form of a Message-ID ('' when there is none)."""
    if not message_id:
        return ""
    stem = _UNSAFE.sub("_", message_id.strip().strip("<>")).strip("._")
    return stem[:_MAX_ID_CHARS]


class DirectorySink:
    """Writes each message as an `.eml` file into `directory` (created if missing)."""

    def __init__(self, directory: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.directory = Path(directory)
        self._fsync = fsync
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DirectorySink({str(self.directory)!r})"

    def send(self, msg_bytes: bytes, mail_from: str, rcpt_to: Sequence[str]) -> str:
        """Store one message atomically; return "250 stored as <file name>".

        Raises:
            PermanentDeliveryError: no recipients or an address with CR/LF.
            TransientDeliveryError: the file could not be written (disk full, permissions).
        """
        check_envelope(mail_from, rcpt_to)
        body = to_crlf(msg_bytes)
        envelope = (
            f"X-Envelope-From: <{mail_from}>\r\n"
            f"X-Envelope-To: {', '.join(f'<{r}>' for r in rcpt_to)}\r\n"
        ).encode("utf-8")
        with self._lock:
            number = next(self._counter)
        stem = file_stem(_message_id(body))
        name = f"{time.time_ns()}-{os.getpid()}-{number:06d}" + (f"-{stem}" if stem else "")
        final = self.directory / f"{name}.eml"
        temporary = self.directory / f".{name}.tmp"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(envelope)
                    f.write(body)
                    f.flush()
                    if self._fsync:
                        os.fsync(f.fileno())
                os.replace(temporary, final)
            except BaseException:
                temporary.unlink(missing_ok=True)
                raise
            if self._fsync:
                dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError as exc:
            raise TransientDeliveryError(
                f"cannot write {final}: {exc.strerror or exc!r}", code=None
            ) from None
        log.debug("stored outgoing message as %s", final.name)
        return f"250 stored as {final.name}"

    def close(self) -> None:
        """Nothing to release; present to satisfy `Transport`."""
