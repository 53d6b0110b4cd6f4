"""`mailbot replay` end to end through the CLI: live (store, tickets, outbox) and dry-run
(nothing written), on the labelled dev mails and the real-world corpus."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailbot.cli import cli
from sqlalchemy import select

from mailbot.store import ClaimedInbound, DecisionRecord, Store
from mailbot.worker import Started, Worker
from tests.integration.test_corpus_parse import _agrees as agrees
from tests.integration.test_corpus_parse import _checks as corpus_checks
from tests.shared_data import require_shared

NOW = "2026-11-25T10:00:00+01:00"


def write_config(tmp_path: Path, store_url: str) -> Path:
    """A config file like the embedded default, with the store and sink in tmp_path."""
    root = Path(__file__).resolve().parents[2]
    text = (root / "config" / "mailbot.toml").read_text(encoding="utf-8")
    text = re.sub(r'(?m)^url = .*$', f'url = "{store_url}"', text, count=1)
    text = re.sub(r'(?m)^attachments_dir = .*$', f'attachments_dir = "{tmp_path / "files"}"',
                  text, count=1)
    # the [outbound] sink (the first `directory =` is [news]'s templates)
    text, n = re.subn(r'(?m)^directory = "var/sent"$', f'directory = "{tmp_path / "sent"}"', text)
    assert n == 1, "config/mailbot.toml: the [outbound] directory line changed"
    text = f'root = "{root}"\n' + text
    path = tmp_path / "mailbot.toml"
    path.write_text(text, encoding="utf-8")
    return path


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def json_lines(output: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def rate_limited(store: Store) -> list[str]:
    """The decisions (kinds) whose automatic reply the per-sender rate limit held back."""
    with store.session() as s:
        rows = s.execute(select(DecisionRecord.kind, DecisionRecord.reasons)).all()
    return [kind for kind, reasons in rows if any(r["rule"] == "rate_limit" for r in reasons)]


def test_live_replay_of_labelled_set(tmp_path: Path, store_url: str,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Live replay stores every mail once, opens tickets with sequential numbers and queues
    exactly one reply per ticket or rejection; a second replay adds nothing. The chunks
    grow from 16 mails (the decision processes get work at once) and results keep the
    input order across them."""
    dev = require_shared("labelled/dev")
    cfg = write_config(tmp_path, store_url)
    code, out = run_cli("licenses", "import", str(dev / "licenses.csv"), "--config", str(cfg))
    assert code == 0, out
    chunks: list[int] = []
    start = Worker.start

    def counted(self: Worker, items: Sequence[ClaimedInbound], now: datetime | None = None
                ) -> Started:
        chunks.append(len(items))
        return start(self, items, now)

    monkeypatch.setattr(Worker, "start", counted)
    code, out = run_cli("replay", str(dev), "--json", "--now", NOW, "--config", str(cfg))
    assert code == 0, out
    monkeypatch.undo()
    assert chunks == [16, 32, 55]  # 103 mails: 16, 32, then what is left of 64
    results = json_lines(out)
    labels = {json.loads(l)["file"]: json.loads(l)
              for l in (dev / "labels.jsonl").read_text().splitlines()}
    assert len(results) == len(labels) == 103
    keys = {"file", "message_id", "from", "subject", "decision", "license", "priority",
            "missing", "scope_reason", "ticket_ref", "deadline", "reasons"}
    assert all(set(r) == keys for r in results)
    tickets = [r for r in results if r["decision"] == "ticket"]
    numbers = [r["ticket_ref"] for r in tickets]
    assert numbers == [f"T-2026-{i:06d}" for i in range(1, len(tickets) + 1)]
    assert all(r["deadline"] for r in tickets)
    # Follow-ups name tickets this fresh store does not know: live, they are new requests.
    followups = [r for r in results if Path(str(r["file"])).name in
                 {f for f, l in labels.items() if l["expected"] == "followup"}]
    assert all("unknown_ticket" in " ".join(map(str, r["reasons"])) for r in followups)
    answered = sum(1 for r in results if r["decision"] in
                   ("ticket", "reject_incomplete", "reject_unknown_license",
                    "reject_expired", "reject_scope"))
    store = Store.from_url(store_url)
    assert store.count_inbound() == {"decided": 103}
    # One reply per ticket or rejection, plus one staff notice per ticket; but the replay
    # runs at one instant, so a sender's 4th and later automatic replies are held back by
    # the rate limit (3 per hour), and recorded as such.
    limited = rate_limited(store)
    senders = Counter(str(r["from"]).lower() for r in results if r["decision"] in
                      ("ticket", "reject_incomplete", "reject_unknown_license",
                       "reject_expired", "reject_scope"))
    assert len(limited) == sum(max(0, n - 3) for n in senders.values()) > 0
    answered -= len(limited)
    assert store.count_outbox() == {"queued": answered + len(tickets)}
    kinds = [o.kind for o in store.list_outbox(limit=1000)]
    assert kinds.count("notice") == len(tickets)  # staff notices are not rate-limited
    assert kinds.count("ack") == len(tickets) - limited.count("ticket")
    # Replaying again: every message is a duplicate; nothing new is stored or queued.
    code, out = run_cli("replay", str(dev), "--json", "--now", NOW, "--config", str(cfg))
    assert code == 0
    again = json_lines(out)
    assert all(r["reasons"][0].startswith("duplicate") for r in again)
    assert [r["decision"] for r in again] == [r["decision"] for r in results]
    assert store.count_outbox() == {"queued": answered + len(tickets)}
    store.close()


def test_dry_run_writes_nothing_and_matches_labels(tmp_path: Path) -> None:
    """Dry-run with a registry CSV creates no database and reproduces the labels."""
    dev = require_shared("labelled/dev")
    cfg = write_config(tmp_path, f"sqlite:///{tmp_path / 'never.db'}")
    code, out = run_cli("replay", str(dev), "--dry-run", "--json", "--now", NOW,
                        "--licenses", str(dev / "licenses.csv"), "--config", str(cfg))
    assert code == 0, out
    assert not (tmp_path / "never.db").exists()
    results = {Path(str(r["file"])).name: r for r in json_lines(out)}
    labels = [json.loads(l) for l in (dev / "labels.jsonl").read_text().splitlines()]
    right = sum(results[l["file"]]["decision"] == l["expected"] for l in labels)
    lic = sum(results[l["file"]]["license"] == l["license"] for l in labels)
    refs = [results[l["file"]]["ticket_ref"] == l["ticket_ref"] for l in labels
            if l["expected"] in ("followup", "staff_reply")]
    print(f"replay --dry-run on labelled/dev: decisions {right}/{len(labels)}, "
          f"licenses {lic}/{len(labels)}")
    assert right / len(labels) >= 0.95 and lic / len(labels) >= 0.98
    assert all(refs)


def test_unparseable_mail_is_quarantined_and_replay_goes_on(tmp_path: Path) -> None:
    """A message the parser cannot take gets a quarantined JSON line, the next one is decided,
    and `quarantine list` shows it."""
    cfg = write_config(tmp_path, f"sqlite:///{tmp_path / 'q.db'}")
    mails = tmp_path / "mails"
    mails.mkdir()
    # Not a mail at all: an empty file is refused by the parser.
    (mails / "a.eml").write_bytes(b"")
    (mails / "b.eml").write_bytes(
        b"From: x@example.org\r\nSubject: Licence 4012-7733\r\nMessage-ID: <b@x>\r\n\r\n"
        b"Dobry den, nefunguje tisk sestavy dochazky za listopad, hlasi chybu 42.\r\n")
    code, out = run_cli("replay", str(mails), "--json", "--now", NOW, "--config", str(cfg))
    assert code == 0, out
    first, second = json_lines(out)
    assert second["decision"] != "quarantined"
    assert first["decision"] == "quarantined"
    assert first["reasons"] and first["reasons"][0]
    code, out = run_cli("quarantine", "list", "--config", str(cfg))
    assert "a.eml" in out
    code, out = run_cli("quarantine", "show", "1", "--config", str(cfg))
    assert code == 0 and "ParseError" in out  # the stored traceback
    result = CliRunner().invoke(cli, ["quarantine", "show", "2", "--config", str(cfg)])
    assert result.exit_code != 0 and "not quarantined" in result.output


def test_corpus_dry_run_never_crashes(tmp_path: Path) -> None:
    """Every corpus mail gets a JSON line; from/subject agree with expected.jsonl (≥ 98 %);
    every stated bounce decides ignore_auto."""
    corpus = require_shared("corpus")
    cfg = write_config(tmp_path, f"sqlite:///{tmp_path / 'never.db'}")
    code, out = run_cli("replay", str(corpus), "--dry-run", "--json", "--now", NOW,
                        "--config", str(cfg))
    assert code == 0, out[-2000:]
    results: dict[str, dict[str, object]] = {}
    for r in json_lines(out):  # an mbox file with several messages reports file#1, file#2
        results.setdefault(str(Path(str(r["file"]).split("#")[0]).relative_to(corpus)), r)
    files = [p for p in corpus.rglob("*") if p.is_file()
             and p.suffix not in (".jsonl", ".md") and not p.name.startswith(".")]
    assert len(results) == len(files)
    checks = agree = bounces = bounce_ignored = 0
    for path, kind, expected in corpus_checks(corpus):
        r = results[str(path.relative_to(corpus))]
        checks += 1
        agree += agrees(kind, str(r[kind] or ""), expected)
    for expected_file in corpus.glob("*/expected.jsonl"):
        for line in expected_file.read_text().splitlines():
            e = json.loads(line)
            if e.get("is_bounce") is True:
                bounces += 1
                r = results[f"{expected_file.parent.name}/{e['file']}"]
                bounce_ignored += r["decision"] == "ignore_auto"
    quarantined = sum(r["decision"] == "quarantined" for r in results.values())
    print(f"corpus replay: {len(results)} mails, quarantined {quarantined}; from/subject "
          f"agreement {agree}/{checks} = {agree / checks:.1%}; bounces ignored "
          f"{bounce_ignored}/{bounces}")
    assert agree / checks >= 0.98
    assert bounce_ignored == bounces
