"""The classifier against the labelled dev mails and the bounces of the real-world corpus.

Prints the accuracy figures and every mismatch (run with -s to see them).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mailbot import config as config_mod
from mailbot.classify.decide import decide
from mailbot.classify.rules import RuleContext
from mailbot.domain import Decision, DecisionKind, LicenseRecord
from mailbot.ingest.parse import parse
from mailbot.registry import DictRegistry, read_license_csv

try:
    from tests.shared_data import require_shared
except ImportError:  # the shared-data helper is not there yet

    def require_shared(sub: str = "") -> Path:
        """The shared folder next to the repository (or its `sub` path); skips when absent."""
        path = Path(__file__).resolve().parents[2].parent / "shared" / sub
        if not path.exists():
            pytest.skip(f"shared test data {path} is absent (expected at ../shared)")
        return path


NOW = datetime(2026, 11, 25, 10, 0, tzinfo=ZoneInfo("Europe/Prague"))
ANSWERED = frozenset(
    (
        DecisionKind.TICKET,
        DecisionKind.REJECT_INCOMPLETE,
        DecisionKind.REJECT_UNKNOWN_LICENSE,
        DecisionKind.REJECT_EXPIRED,
        DecisionKind.REJECT_SCOPE,
        DecisionKind.UNSUBSCRIBE,
    )
)
"""Decisions that make mailbot write back to the sender."""


def _shared(sub: str) -> Path:
    return require_shared(sub)


@dataclass(frozen=True)
class Case:
    file: str
    label: dict[str, object]
    decision: Decision
    mail_text: str


def _registry(dev: Path) -> DictRegistry:
    records, errors = read_license_csv((dev / "licenses.csv").read_text(encoding="utf-8"))
    assert not errors, errors
    table: dict[str, LicenseRecord] = {r.license: r for r in records}
    return DictRegistry(table)


def _from_header_config() -> config_mod.Config:
    """The default config with staff trusted by their From domain, as the labels define a
    staff reply (the dev mails carry no Authentication-Results and no reply token)."""
    cfg = config_mod.load()
    return cfg.model_copy(
        update={"conversation": cfg.conversation.model_copy(update={"verify_staff": False})})


def _decide_all(cfg: config_mod.Config) -> list[Case]:
    dev = _shared("labelled/dev")
    ctx = RuleContext.from_config(cfg, _registry(dev), NOW, None)
    out = []
    for line in (dev / "labels.jsonl").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        label = json.loads(line)
        mail = parse((dev / label["file"]).read_bytes())
        out.append(Case(label["file"], label, decide(mail, ctx), mail.text))
    return out


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    """Every labelled dev mail decided at the labels' instant, dry-run (no ticket index)."""
    return _decide_all(_from_header_config())


def test_unverified_staff_replies_are_customer_mail() -> None:
    """With staff verification on (the default), the dev set's staff replies, which carry
    neither a trusted Authentication-Results nor a reply token, are not staff replies: they
    are flagged suspicious and handled as customer mail (a follow-up here)."""
    staff = [c for c in _decide_all(config_mod.load()) if c.label["expected"] == "staff_reply"]
    assert len(staff) == 4
    for case in staff:
        assert case.decision.kind.value == "followup", case.file
        assert "suspicious_staff" in case.decision.flags, case.file


def _pct(good: int, total: int) -> float:
    return 100.0 * good / total if total else 100.0


def _mismatches(case: Case) -> Iterator[str]:
    d, label = case.decision, case.label
    if d.kind.value != label["expected"]:
        yield f"decision {d.kind.value} != {label['expected']}"
    if d.license != label["license"]:
        yield f"license {d.license} != {label['license']}"
    priority = d.priority.value if d.priority else None
    if label["expected"] == "ticket" and priority != label["priority"]:
        yield f"priority {priority} != {label['priority']}"
    if label["expected"] == "reject_incomplete" and list(d.missing) != label["missing"]:
        yield f"missing {list(d.missing)} != {label['missing']}"
    if label["expected"] == "reject_scope" and d.scope_reason != label["scope_reason"]:
        yield f"scope_reason {d.scope_reason} != {label['scope_reason']}"
    if label.get("ticket_ref") and d.ticket_ref != label["ticket_ref"]:
        yield f"ticket_ref {d.ticket_ref} != {label['ticket_ref']}"


def test_labelled_dev_set(cases: list[Case]) -> None:
    """Decision, license and detail accuracy on the dev set meet the targets; no automatic mail is answered."""
    n = len(cases)
    kind_ok = sum(c.decision.kind.value == c.label["expected"] for c in cases)
    lic_ok = sum(c.decision.license == c.label["license"] for c in cases)
    tickets = [c for c in cases if c.label["expected"] == "ticket" and c.decision.kind.value == "ticket"]
    prio_ok = sum((c.decision.priority.value if c.decision.priority else None) == c.label["priority"] for c in tickets)
    incompl = [c for c in cases if c.label["expected"] == "reject_incomplete" and c.decision.kind.value == "reject_incomplete"]
    miss_ok = sum(list(c.decision.missing) == c.label["missing"] for c in incompl)
    scoped = [c for c in cases if c.label["expected"] == "reject_scope" and c.decision.kind.value == "reject_scope"]
    scope_ok = sum(c.decision.scope_reason == c.label["scope_reason"] for c in scoped)
    auto_answered = [
        c.file for c in cases if c.label["expected"] == "ignore_auto" and c.decision.kind in ANSWERED
    ]
    # A distractor taken as a license: a license the labels do not give, on a mail that the
    # labels say carries none (IČO, phone, invoice, dates...).
    distractors = [
        c.file
        for c in cases
        if c.decision.license is not None
        and c.label["license"] is None
        and c.label["expected"] not in ("followup", "staff_reply", "ignore_auto", "unsubscribe")
    ]
    distractors += [
        c.file
        for c in cases
        if c.decision.license is not None
        and c.label["license"] is not None
        and c.decision.license != c.label["license"]
    ]
    print(f"\nlabelled dev set: {n} mails at {NOW.isoformat()}")
    print(f"  decision accuracy      {_pct(kind_ok, n):6.1f} %  ({kind_ok}/{n})")
    print(f"  license accuracy       {_pct(lic_ok, n):6.1f} %  ({lic_ok}/{n})")
    print(f"  priority accuracy      {_pct(prio_ok, len(tickets)):6.1f} %  ({prio_ok}/{len(tickets)} correct tickets)")
    print(f"  missing accuracy       {_pct(miss_ok, len(incompl)):6.1f} %  ({miss_ok}/{len(incompl)} correct rejections)")
    print(f"  scope_reason accuracy  {_pct(scope_ok, len(scoped)):6.1f} %  ({scope_ok}/{len(scoped)} correct rejections)")
    print(f"  ignore_auto answered   {len(auto_answered)} {auto_answered}")
    print(f"  distractors as license {len(distractors)} {distractors}")
    bad = [(c, list(_mismatches(c))) for c in cases]
    bad = [(c, m) for c, m in bad if m]
    print(f"  mismatches: {len(bad)}")
    for c, problems in bad:
        print(f"    {c.file}: {'; '.join(problems)}  [{', '.join(c.decision.hits)}]")
    assert _pct(kind_ok, n) >= 95.0
    assert _pct(lic_ok, n) >= 98.0
    assert auto_answered == []


def _corpus_bounces() -> Iterator[tuple[str, Path]]:
    corpus = _shared("corpus")
    for expected in sorted(corpus.glob("*/expected.jsonl")):
        for line in expected.read_text(encoding="utf-8").splitlines():
            if line.strip():
                fact = json.loads(line)
                if fact.get("is_bounce") is True:
                    yield f"{expected.parent.name}/{fact['file']}", expected.parent / fact["file"]


def test_corpus_bounces_are_ignored() -> None:
    """Every real-world bounce of the shared corpus is decided ignore_auto (never answered)."""
    dev_registry = DictRegistry({})
    ctx = RuleContext.from_config(config_mod.load(), dev_registry, NOW, None)
    missed: list[str] = []
    total = 0
    for name, path in _corpus_bounces():
        total += 1
        decision = decide(parse(path.read_bytes()), ctx)
        if decision.kind is not DecisionKind.IGNORE_AUTO:
            missed.append(f"{name}: {decision.kind.value}")
    print(f"\ncorpus bounces: {total}, ignored {total - len(missed)}, missed {len(missed)}")
    for m in missed:
        print(f"    {m}")
    assert total > 0
    assert missed == []
