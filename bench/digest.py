#!/usr/bin/env python3
"""The daily staff digest for a store of 1,000 (and 10,000) tickets.

    .venv/bin/python bench/digest.py [--sizes 1000 10000] [--repeat 5] [--no-store]

Builds N TicketInfo values with varied states (open / waiting / closed), priorities and
deadlines around a fixed clock (Wednesday 2026-11-25 07:30 Europe/Prague), then times
``build_digest`` + ``DigestRenderer.render`` (best of `--repeat`) against the target < 1 s.
Prints the section sizes, the message and HTML sizes, and checks that the HTML part parses
(html.parser: every element closed in order, one ticket row per line shown).

Unless `--no-store`, also times reading the open and waiting tickets of a temporary SQLite
store (WAL, as the daemon runs it) holding 1,000 tickets with
``Store.list_tickets(states=("open", "waiting"), limit=100000)``, as the scheduler does.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import random
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mailbot.business_hours import BusinessCalendar
from mailbot.config import Config, StoreConfig, load
from mailbot.domain import OutgoingMail, Priority, TicketInfo
from mailbot.ingest.intake import save_raw_many
from mailbot.replies.digest import MAX_LINES, DigestRenderer, build_digest

TARGET_S = 1.0
PRAGUE = ZoneInfo("Europe/Prague")
NOW = datetime(2026, 11, 25, 7, 30, tzinfo=PRAGUE)
SINCE = NOW - timedelta(days=1)
MESSAGE_ID = "<mailbot-digest-20261125@estelar.example>"
VOID = {"meta", "br", "hr", "img", "link", "input", "col", "area", "base", "wbr"}
SUBJECTS = ("Nejde tisk docházky", "Terminál u vrátnice nekomunikuje", "Chyba při exportu",
            "<script>alert(1)</script> {{ 7*7 }}", "Dotaz k nastavení směn",
            "Čtečka karet hlásí chybu 0x17 " * 4)
T = TypeVar("T")


def make_tickets(n: int, seed: int = 42) -> list[TicketInfo]:
    """`n` tickets opened over the last 30 days: ~70 % open, 15 % waiting, 15 % closed;
    deadlines from 5 days ago to 4 days ahead; 5 % emergencies."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        opened = NOW - timedelta(minutes=rnd.randrange(30 * 24 * 60))
        deadline = NOW + timedelta(minutes=rnd.randrange(-5 * 24 * 60, 4 * 24 * 60))
        state = rnd.choices(("open", "waiting", "closed"), (70, 15, 15))[0]
        out.append(TicketInfo(
            number=f"T-2026-{i + 1:06d}", state=state, subject=rnd.choice(SUBJECTS),
            customer_email=f"zakaznik{i}@firma{i % 97}.cz",
            customer_name=f"Firma {i % 97} s.r.o. – závod Plzeň",
            license=f"{4000 + i % 997:04d}-{i % 9973:04d}",
            priority=Priority.EMERGENCY if rnd.random() < 0.05 else Priority.NORMAL,
            language="cs", opened_at=opened, deadline=deadline,
            closed_at=NOW if state == "closed" else None,
            assignee=rnd.choice((None, "Petr Dvořák", "Jana Nováková")),
        ))
    return out


class Checker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors = 0
        self.rows = 0
        self.tags = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags += 1
        if tag == "tr" and "ticket" in (dict(attrs).get("class") or "").split():
            self.rows += 1
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if self.stack and self.stack[-1] == tag:
            self.stack.pop()
        else:
            self.errors += 1


def best_of(repeat: int, fn: Callable[[], T]) -> tuple[float, T]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    assert result is not None
    return best, result


def bench_render(config: Config, n: int, repeat: int) -> bool:
    tickets = make_tickets(n)
    calendar = BusinessCalendar(config.calendar)
    renderer = DigestRenderer(config)

    def once() -> OutgoingMail | None:
        digest = build_digest(tickets, now=NOW, since=SINCE, calendar=calendar)
        return renderer.render(digest, message_id=MESSAGE_ID, now=NOW, purpose="digest:bench")

    t_build, digest = best_of(repeat, lambda: build_digest(tickets, now=NOW, since=SINCE,
                                                          calendar=calendar))
    t_total, made = best_of(repeat, once)
    assert made is not None
    raw, recipients = made.raw, made.rcpt_to
    msg = email.message_from_bytes(raw, _class=EmailMessage, policy=email.policy.default)
    html_part = msg.get_body(("html",))
    assert html_part is not None
    html = html_part.get_content()
    checker = Checker()
    checker.feed(html)
    checker.close()
    shown = sum(min(len(getattr(digest, k)), MAX_LINES)
                for k in ("new", "open", "overdue", "due_today"))
    parsed_ok = checker.errors == 0 and not checker.stack and checker.rows == shown
    ok = t_total < TARGET_S and parsed_ok and bool(recipients)
    print(f"{n:>6} tickets: new {len(digest.new)}, open {len(digest.open)}, "
          f"overdue {len(digest.overdue)}, due today {len(digest.due_today)}")
    verdict = "OK" if t_total < TARGET_S else "MISSED"
    print(f"        build_digest {t_build * 1000:7.1f} ms; build + render "
          f"{t_total * 1000:7.1f} ms (best of {repeat}; target < {TARGET_S:.0f} s: {verdict})")
    print(f"        message {len(raw) / 1024:.0f} KiB, "
          f"HTML part {len(html.encode()) / 1024:.0f} KiB "
          f"({checker.tags} tags, {checker.rows} ticket rows of {shown} shown; parser: "
          f"{'OK' if parsed_ok else f'{checker.errors} errors, unclosed {checker.stack[-3:]}'}); "
          f"subject {msg['Subject']!r}")
    return ok


def bench_store(config: Config, n: int, repeat: int) -> bool:
    from mailbot.migrations import open_store

    tickets = make_tickets(n)
    with tempfile.TemporaryDirectory(prefix="mailbot-digest-bench-") as tmp:
        cfg = config.model_copy(update={"root": Path(tmp),
                                        "store": StoreConfig(url=f"sqlite:///{tmp}/bench.db")})
        store = open_store(cfg)
        try:
            t0 = time.perf_counter()
            raws = [(f"From: {t.customer_email}\r\nTo: podpora@estelar.example\r\n"
                     f"Message-ID: <bench-{i}@firma.cz>\r\nSubject: x\r\n\r\nbody {i}\r\n").encode()
                    for i, t in enumerate(tickets)]
            saved = save_raw_many(store, [(r, "bench") for r in raws])
            with store.transaction() as tx:
                for t, s in zip(tickets, saved, strict=True):
                    year, seq = t.number.split("-")[1:]
                    tx.open_ticket(inbound_id=s.id, number=t.number, year=int(year), seq=int(seq),
                                   opened_at=t.opened_at, deadline=t.deadline, license=t.license,
                                   customer_email=t.customer_email,
                                   customer_name=t.customer_name, subject=t.subject,
                                   priority=t.priority, language=t.language)
                    if t.state != "open":
                        row = tx.find_ticket(t.number)
                        assert row is not None
                        tx.set_state(row.id, t.state, NOW)
            t_fill = time.perf_counter() - t0
            t_read, read = best_of(repeat, lambda: store.list_tickets(
                states=("open", "waiting"), limit=100000))
        finally:
            store.close()
    expected = sum(t.state != "closed" for t in tickets)
    ok = len(read) == expected
    renderer = DigestRenderer(config)
    calendar = BusinessCalendar(config.calendar)
    t1 = time.perf_counter()
    renderer.render(build_digest(read, now=NOW, since=SINCE, calendar=calendar),
                    message_id=MESSAGE_ID, now=NOW, purpose="digest:bench")
    t_digest = time.perf_counter() - t1
    print(f"store:  {n} tickets inserted in {t_fill:.2f} s; list_tickets(open, waiting) -> "
          f"{len(read)} in {t_read * 1000:.1f} ms (best of {repeat}); read + digest "
          f"{(t_read + t_digest) * 1000:.1f} ms (target < {TARGET_S:.0f} s: "
          f"{'OK' if t_read + t_digest < TARGET_S and ok else 'MISSED'})")
    return ok and t_read + t_digest < TARGET_S


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--no-store", action="store_true", help="skip the SQLite read")
    args = p.parse_args()
    base = load()
    config = base.model_copy(update={"mailbox": base.mailbox.model_copy(
        update={"staff_notify": ("tym-podpory@estelar.example",)})})
    ok = True
    for n in args.sizes:
        ok = bench_render(config, n, args.repeat) and ok
    if not args.no_store:
        ok = bench_store(config, 1000, args.repeat) and ok
    if not ok:
        print("PROBLEM: a target was missed or the HTML part did not parse")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
