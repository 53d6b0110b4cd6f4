"""Taking one selected IMAP folder's new mail in: sizes, FETCH batches, stand-ins, marking.

`FolderTaker.take_new` is the pass that `ImapPoller` runs after SELECT and after each IDLE
(see mailbot/ingest/imap.py for the whole cycle). Memory is bounded: sizes (RFC822.SIZE)
come first, `SIZE_WINDOW` UIDs a command; one FETCH takes at most `batch` messages and
`batch_bytes` bytes. A message over `limits.message_bytes` is never fetched whole: its
header section (at most `limits.header_bytes`) is stored as a stand-in that the worker
quarantines `too_large`. The checkpoint never passes a UID that was not taken in.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from imapclient import IMAPClient
from imapclient.imapclient import SEEN

from mailbot.config import ImapMailboxConfig, LimitsConfig
from mailbot.ingest.intake import Intake
from mailbot.ingest.limits import human_size, not_fetched_stand_in
from mailbot.store import Store

# The poller's logger: one log name for all of IMAP intake.
log = logging.getLogger("mailbot.ingest.imap")

SIZE_WINDOW = 500  # UIDs per RFC822.SIZE fetch (a command line of at most ~6 kB)


@dataclass
class FolderTaker:
    """Stores, marks and checkpoints the new messages of one folder (one per poller).

    `renew` keeps the poller's lease (it raises when the lease is lost); `label` names the
    mailbox in log lines.
    """

    config: ImapMailboxConfig
    limits: LimitsConfig
    store: Store
    intake: Intake
    stop: threading.Event
    key: str
    renew: Callable[[], None]
    label: str
    # UIDs above the checkpoint already stored and marked (a UID below them was not taken
    # in yet), for the UIDVALIDITY `_taken_validity`.
    _taken: set[int] = field(default_factory=set, init=False)
    _taken_validity: int = field(default=0, init=False)

    def __str__(self) -> str:
        return self.label

    def take_new(self, client: IMAPClient, uidvalidity: int) -> int:
        """Store, mark and checkpoint every message above the checkpoint; returns how many.

        Sizes first, then batches of at most `batch` messages and `batch_bytes` bytes, one
        FETCH each (see the module notes for mail over the size limit). The checkpoint moves
        only past UIDs taken in: one missing from the server's answer is tried next pass.
        """
        known_validity, last_uid = self.store.imap_checkpoint(self.key)
        if known_validity and known_validity != uidvalidity:
            log.warning("%s: uidvalidity_changed %d -> %d; rescanning the folder "
                        "(duplicates are recognised by the store)", self, known_validity,
                        uidvalidity)
            last_uid = 0
        if self._taken_validity != uidvalidity:
            self._taken, self._taken_validity = set(), uidvalidity
        uids = sorted(u for u in client.search(["UID", f"{last_uid + 1}:*"]) if u > last_uid)
        self._taken.intersection_update(uids)  # forget what is gone or below the checkpoint
        todo = [u for u in uids if u not in self._taken]
        checkpoint, done = last_uid, 0  # uids[:done] are all taken in
        taken = 0
        for w in range(0, len(todo), SIZE_WINDOW):
            if self.stop.is_set():
                break
            self.renew()
            window = todo[w : w + SIZE_WINDOW]
            sizes = self._sizes(client, window)
            for chunk, whole in self._batches(window, sizes):
                if self.stop.is_set():
                    break
                self.renew()
                present = self._fetch(client, chunk, whole, sizes)
                if present:
                    # One commit for the chunk, then one STORE/MOVE for it: every message is
                    # durable before any is marked.
                    self.intake.accept_many_blocking(
                        [(raw, f"{self.key}:{uidvalidity}:{uid}") for uid, raw in present]
                    )
                    self._mark(client, [uid for uid, _ in present])
                    self._taken.update(uid for uid, _ in present)
                    taken += len(present)
                checkpoint, done = self._advance(uidvalidity, uids, checkpoint, done)
        checkpoint, done = self._advance(uidvalidity, uids, checkpoint, done)
        if done < len(uids) and not self.stop.is_set():
            log.warning("%s: UID %d not taken in (%d later ones are); the checkpoint stays "
                        "at %d and it is tried again", self, uids[done],
                        len(self._taken), checkpoint)
        if checkpoint == last_uid and known_validity != uidvalidity:
            self.store.save_imap_checkpoint(self.key, uidvalidity, last_uid)
        return taken

    def _advance(self, uidvalidity: int, uids: list[int], checkpoint: int, done: int
                 ) -> tuple[int, int]:
        """Move the checkpoint over the UIDs taken in without a gap; returns (UID, count)."""
        while done < len(uids) and uids[done] in self._taken:
            self._taken.discard(uids[done])
            done += 1
        if done and uids[done - 1] > checkpoint:
            checkpoint = uids[done - 1]
            self.store.save_imap_checkpoint(self.key, uidvalidity, checkpoint)
        return checkpoint, done

    def _sizes(self, client: IMAPClient, window: list[int]) -> dict[int, int]:
        """RFC822.SIZE of the UIDs in `window` the server still has (one FETCH)."""
        fetched = client.fetch(window, [b"RFC822.SIZE"])
        return {uid: int(data[b"RFC822.SIZE"]) for uid, data in fetched.items()
                if data.get(b"RFC822.SIZE") is not None}

    def _batches(self, window: list[int], sizes: dict[int, int]
                 ) -> list[tuple[list[int], bool]]:
        """`window` in FETCH batches: (UIDs, whole) with whole = False for mail over the size
        limit (header sections only, each counted as `limits.header_bytes`)."""
        batches: list[tuple[list[int], bool]] = []
        chunk: list[int] = []
        chunk_bytes, chunk_whole = 0, True
        for uid in window:
            if uid not in sizes:
                continue  # not answered: stays above the checkpoint, tried next pass
            whole = sizes[uid] <= self.limits.message_bytes
            cost = sizes[uid] if whole else self.limits.header_bytes
            if chunk and (whole != chunk_whole or len(chunk) >= self.config.batch
                          or chunk_bytes + cost > self.config.batch_bytes):
                batches.append((chunk, chunk_whole))
                chunk, chunk_bytes = [], 0
            chunk.append(uid)
            chunk_bytes += cost
            chunk_whole = whole
        if chunk:
            batches.append((chunk, chunk_whole))
        return batches

    def _fetch(self, client: IMAPClient, chunk: list[int], whole: bool,
               sizes: dict[int, int]) -> list[tuple[int, bytes]]:
        """(UID, raw) of the messages of `chunk` the server answered with their bytes: the
        whole message, or for mail over the size limit a stand-in made of its headers."""
        if whole:
            item, key = b"BODY.PEEK[]", b"BODY[]"
        else:
            cap = self.limits.header_bytes
            item, key = f"BODY.PEEK[HEADER]<0.{cap}>".encode(), b"BODY[HEADER]<0>"
        fetched = client.fetch(chunk, [item])
        present: list[tuple[int, bytes]] = []
        for uid in chunk:
            data = fetched.get(uid, {}).get(key)
            if data is None:  # expunged meanwhile, or a broken server
                log.warning("%s: UID %d: the FETCH answer has no %s; not taken in",
                            self, uid, key.decode())
                continue
            raw = bytes(data)
            if not whole:
                log.warning("%s: UID %d is %s, over limits.message_bytes (%s): only its "
                            "header section was fetched", self, uid, human_size(sizes[uid]),
                            human_size(self.limits.message_bytes))
                raw = not_fetched_stand_in(raw, sizes[uid], self.limits.header_bytes)
            present.append((uid, raw))
        return present

    def _mark(self, client: IMAPClient, uids: list[int]) -> None:
        """Flag (or move) the stored messages. Flags are set with ``+FLAGS.SILENT``: the
        server's untagged FETCH of each message's new flags, which nothing here reads, cost
        the lexer of imapclient about a fifth of this thread's CPU in a catch-up."""
        if self.config.after_store == "move":
            if client.has_capability("MOVE"):
                client.move(uids, self.config.move_to)
            else:
                client.copy(uids, self.config.move_to)
                client.delete_messages(uids, silent=True)
                client.uid_expunge(uids)
        else:
            client.add_flags(uids, [SEEN, self.config.keyword.encode()], silent=True)
