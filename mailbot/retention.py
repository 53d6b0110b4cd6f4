"""Retention: what `[retention]` lets go, for the scheduler and `mailbot purge`.

Three kinds of data go, each bounded by `retention.batch` per run:

- the raw bytes of decided inbound mail older than `raw_days` (never of received or
  quarantined mail, never of mail about a ticket that is not closed that long; the row with
  its dedup keys and size stays);
- the attachment rows of tickets closed more than `attachment_days` ago;
- attachment files no row refers to (orphans: a transaction that failed after the file was
  written, or rows just removed) once unchanged for `orphan_grace_hours`, so a write in
  flight is never removed.

`purge(..., dry_run=True)` reports the same counts and bytes without changing anything.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from mailbot.attachments import AttachmentStore
from mailbot.config import Config
from mailbot.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """What a purge removed (or, in a dry run, would remove)."""

    dry_run: bool
    raw_messages: int = 0
    raw_bytes: int = 0
    attachments: int = 0
    attachment_bytes: int = 0
    files: int = 0
    file_bytes: int = 0
    more: bool = False  # a batch limit was reached: another run has more to do

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    @property
    def empty(self) -> bool:
        return not (self.raw_messages or self.attachments or self.files)


def purge(config: Config, store: Store, now: datetime, *, dry_run: bool = False,
          wall_clock: float | None = None) -> PurgeReport:
    """Apply `[retention]` once at `now` (file ages against `wall_clock`, default the real
    time: they are compared with the files' mtimes)."""
    ret = config.retention
    files = AttachmentStore(config.path(config.store.attachments_dir))
    grace = ret.orphan_grace_hours * 3600

    raw_cutoff = now - timedelta(days=ret.raw_days)
    raw = store.raw_purgeable(raw_cutoff, ret.batch) if ret.raw_days else []
    att_cutoff = now - timedelta(days=ret.attachment_days)
    att = store.attachments_purgeable(att_cutoff, ret.batch) if ret.attachment_days else []

    if dry_run:
        referenced = store.attachment_digests(exclude=[a[0] for a in att])
        orphans = files.orphans(referenced, grace, ret.batch, now=wall_clock)
        return PurgeReport(True, len(raw), sum(n for _, n in raw), len(att),
                           sum(a[3] for a in att), len(orphans), sum(n for _, n in orphans),
                           more=_more(ret.batch, raw, att, orphans))

    raw_done = store.purge_raw([i for i, _ in raw], raw_cutoff)
    att_done = store.purge_attachments([a[0] for a in att], att_cutoff)
    # The referenced digests are read after the rows went and before the directory is
    # listed: a file written since is younger than the grace period.
    referenced = store.attachment_digests()
    orphans = files.orphans(referenced, grace, ret.batch, now=wall_clock)
    cutoff = (time.time() if wall_clock is None else wall_clock) - grace
    removed = files.remove([f for f, _ in orphans], not_newer_than=cutoff)
    removed_bytes = sum(n for f, n in orphans if not f.exists())
    report = PurgeReport(False, len(raw_done), sum(n for _, n in raw_done), att_done,
                         sum(a[3] for a in att), removed, removed_bytes,
                         more=_more(ret.batch, raw, att, orphans))
    if not report.empty:
        log.info("retention: %d raw messages (%d bytes), %d attachments, %d files (%d bytes) "
                 "removed", report.raw_messages, report.raw_bytes, report.attachments,
                 report.files, report.file_bytes)
    return report


def _more(batch: int, *found: Sequence[object]) -> bool:
    return any(len(f) >= batch for f in found)
