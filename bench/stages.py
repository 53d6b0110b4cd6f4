#!/usr/bin/env python3
"""Benchmark the pure per-message stages: parse, decide, render_reply, render_notice (ms/mail each).

    .venv/bin/python bench/stages.py [--corpus /tmp/c5k] [--n 5000] [--seed 42] [--repeat 3]

Uses the corpus directory given (its manifest ``<corpus>.manifest.jsonl`` beside it) or,
when missing, generates one with ../shared/tools/gen_corpus.py (deterministic). A license
registry is built from the manifest (the same tier mix as bench/replay.py), so decide sees
a realistic mix of tickets and rejections. Each stage is timed on its own, without a
profiler, as CPU time of this process (time.process_time: other load on a shared machine
does not count, waiting for a core does not either), best of `--repeat` runs:
  * parse: mailbot.ingest.parse.parse(raw) per mail;
  * decide: mailbot.classify.decide.decide(mail, ctx) per mail;
  * render_reply: ReplyRenderer.render of a ticket acknowledgement per mail (the
    decision of every mail recast as a TICKET with a ticket, so every mail gets a reply);
  * render_notice: ConversationRenderer.notice of the staff notice of that new ticket per
    mail (as the ticket handler calls it);
  * render_stage: the render stage as the worker runs it (`handlers.render_replies`) on the
    mails' real decisions, all at one instant as in `replay`: once rendering every
    automatic reply, once leaving out those the per-address and total rate limits will
    hold back (`RateForecast`, from an empty outbox).
Also prints bare email.message_from_bytes(policy=default) for reference.
"""

from __future__ import annotations

import argparse
import dataclasses
import email
import email.policy
import gc
import json
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MAILBOT_SHARED", ROOT.parent / "shared"))
sys.path.insert(0, str(ROOT))

import mailbot.config
from mailbot.actions import ActionSettings, RateForecast, ReplyContext, TicketDraft
from mailbot.business_hours import BusinessCalendar
from mailbot.classify.decide import decide
from mailbot.classify.rules import RuleContext
from mailbot.domain import (
    DecisionKind,
    LicenseRecord,
    Priority,
    TicketView,
    Tier,
)
from mailbot.handlers import HANDLERS, render_replies
from mailbot.handlers.ticket import new_ticket_info
from mailbot.ingest.parse import parse
from mailbot.registry import DictRegistry
from mailbot.replies.conversation import ConversationRenderer
from mailbot.replies.render import ReplyRenderer

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=ZoneInfo("Europe/Prague"))
TIERS = [Tier.START, Tier.HOTLINE, Tier.HOTLINE_PLUS, Tier.SPECIAL, Tier.START, Tier.NONE]


def corpus_files(corpus: Path, n: int, seed: int) -> tuple[list[Path], Path]:
    manifest = corpus.with_suffix(".manifest.jsonl")
    if not corpus.is_dir() or not any(corpus.glob("*.eml")):
        subprocess.run(
            [sys.executable, str(SHARED / "tools" / "gen_corpus.py"), "--n", str(n),
             "--seed", str(seed), "--out", str(corpus), "--manifest", str(manifest)],
            check=True, stdout=subprocess.DEVNULL,
        )
    return sorted(corpus.glob("*.eml")), manifest


def registry_from(manifest: Path) -> DictRegistry:
    seen: dict[str, str] = {}
    if manifest.exists():
        for line in manifest.read_text(encoding="utf-8").splitlines():
            m = json.loads(line)
            if m.get("license") and m["license"] not in seen:
                seen[m["license"]] = m["from"].split("@")[-1]
    records = {
        lic: LicenseRecord(lic, f"Customer {i}", domain, date(2026, 9, 1),
                           TIERS[i % len(TIERS)], date(2027, 3, 1))
        for i, (lic, domain) in enumerate(sorted(seen.items()))
    }
    return DictRegistry(records)


def timed(fn, items, repeat: int) -> tuple[float, list]:
    """Best CPU ms/item over `repeat` runs, and the results of the last run."""
    best = float("inf")
    out: list = []
    for _ in range(repeat):
        gc.collect()
        start = time.process_time()
        out = [fn(x) for x in items]
        best = min(best, (time.process_time() - start) / max(1, len(items)))
    return best * 1000, out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--corpus", type=Path, default=Path("/tmp/c5k"))
    p.add_argument("--n", type=int, default=5000, help="mails to generate when the corpus is missing")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--limit", type=int, default=0, help="use only the first N mails")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--only", choices=("parse", "decide", "render"), default=None)
    args = p.parse_args()

    files, manifest = corpus_files(args.corpus, args.n, args.seed)
    if args.limit:
        files = files[: args.limit]
    raws = [f.read_bytes() for f in files]
    cfg = mailbot.config.load(ROOT / "config" / "mailbot.toml")
    ctx = RuleContext.from_config(cfg, registry_from(manifest), NOW, None)
    renderer = ReplyRenderer(cfg)
    conversation = ConversationRenderer(cfg, b"bench-token-secret-" * 2)

    print(f"corpus: {args.corpus} ({len(raws)} mails, {sum(map(len, raws)) / 1e6:.1f} MB)")
    if args.only in (None, "parse"):
        bare, _ = timed(lambda r: email.message_from_bytes(r, policy=email.policy.default),
                        raws, args.repeat)
        print(f"bare email parse   {bare:7.3f} ms/mail")
    parse_ms, mails = timed(parse, raws, args.repeat if args.only in (None, "parse") else 1)
    if args.only in (None, "parse"):
        print(f"parse              {parse_ms:7.3f} ms/mail")

    decisions = None
    if args.only in (None, "decide", "render"):
        decide_ms, decisions = timed(lambda m: decide(m, ctx), mails,
                                     args.repeat if args.only != "render" else 1)
        if args.only != "render":
            print(f"decide             {decide_ms:7.3f} ms/mail")
            kinds = Counter(d.kind.value for d in decisions)
            print("  decisions: " + ", ".join(f"{k}={v}" for k, v in sorted(kinds.items())))

    if args.only in (None, "render"):
        assert decisions is not None
        pairs = []
        for i, (mail, d) in enumerate(zip(mails, decisions, strict=True)):
            number = f"T-2026-{i + 1:06d}"
            ticket = TicketView(
                number=number,
                subject=mail.subject,
                priority=d.priority or Priority.NORMAL,
                opened_at=NOW,
                deadline=NOW + timedelta(hours=16),
                customer_email=mail.from_addr or "",
                license=d.license,
            )
            pairs.append((mail, dataclasses.replace(d, kind=DecisionKind.TICKET), ticket))
        mid = "<ticket-T-2026-000001.1@estelar.example>"
        render_ms, replies = timed(
            lambda t: renderer.render(t[1], t[0], ticket=t[2], message_id=mid, now=NOW,
                                    purpose="ack:bench"),
            pairs, args.repeat,
        )
        made = sum(1 for r in replies if r is not None)
        print(f"render_reply       {render_ms:7.3f} ms/mail ({made} replies)")
        notices = [
            (i, mail, d, new_ticket_info(ticket, d, mail))
            for i, (mail, d, ticket) in enumerate(pairs, 1)
        ]
        notice_ms, sent = timed(
            lambda t: conversation.notice(
                event="new", ticket=t[3], customer=t[2].customer,
                entitlement_end=t[2].entitlement_end, mail=t[1], text=t[1].text,
                inbound_id=t[0], now=NOW, purpose=f"notice:{t[0]}"),
            notices, args.repeat,
        )
        made = sum(1 for r in sent if r is not None)
        print(f"render_notice      {notice_ms:7.3f} ms/mail ({made} notices)")
        render_stage(cfg, renderer, conversation, mails, decisions, args.repeat)
    return 0


def render_stage(cfg: mailbot.config.Config, renderer: ReplyRenderer,
                 conversation: ConversationRenderer, mails: list, decisions: list,
                 repeat: int) -> None:
    """The render stage on the real decisions, with and without the held-back replies."""
    ctx = ReplyContext(cfg.mailbox, renderer, conversation, ())
    domain = cfg.mailbox.message_id_domain
    jobs, addresses = [], []
    for i, (mail, d) in enumerate(zip(mails, decisions, strict=True), 1):
        ticket = None
        if HANDLERS[d.kind].opens_ticket:
            view = TicketView(number=f"T-2026-{i:06d}", subject=mail.subject,
                              priority=d.priority or Priority.NORMAL, opened_at=NOW,
                              deadline=NOW + timedelta(hours=16),
                              customer_email=mail.from_addr or "", license=d.license)
            ticket = TicketDraft(2026, i, view)
        auto = HANDLERS[d.kind].automatic(i, d, ticket, domain)
        author = mail.from_addr if mail.from_header else None
        addresses.append(author.lower() if auto is not None and author else None)
        jobs.append((i, mail, d, ticket))
    settings = ActionSettings.from_config(cfg, BusinessCalendar(cfg.calendar))
    no_total = dataclasses.replace(settings, auto_replies_total_per_hour=1_000_000)
    variants = [("every automatic reply rendered", [False] * len(jobs))]
    for what, limits in (("per-address limit (bench/replay.py)", no_total),
                         ("per-address and total limits", settings)):
        _, holds = RateForecast(limits).hold_back(addresses, NOW, {}, 0)
        variants.append((f"{sum(holds)} held back by the {what}", holds))
    for label, hold in variants:
        ms, out = timed(lambda t: render_replies(ctx, inbound_id=t[0][0], mail=t[0][1],
                                                 decision=t[0][2], ticket=t[0][3], now=NOW,
                                                 hold=t[1]),
                        list(zip(jobs, hold, strict=True)), repeat)
        print(f"render_stage       {ms:7.3f} ms/mail ({sum(map(len, out))} mails; {label})")


if __name__ == "__main__":
    sys.exit(main())
