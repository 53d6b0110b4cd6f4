"""Scoring the decision engine against a labelled directory (`mailbot eval DIR`).

A labelled directory holds `.eml` files, `labels.jsonl` (one object per mail: `file`,
`expected`, `license`, `priority`, `missing`, `scope_reason`, `ticket_ref`) and the
`licenses.csv` registry the labels were made against. `score` compares decisions with the
labels and counts what matters to a customer: the decision, the license taken, the details of
tickets and rejections, automatic mail answered (a mail loop) and numbers taken as a license
that are not the customer's (a ticket under somebody else's license).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from mailbot.classify.settings import ClassifyConfig
from mailbot.domain import Decision, DecisionKind

__all__ = ["ANSWERED", "Label", "Outcome", "Score", "read_labels", "score"]

ANSWERED: Final = frozenset({
    DecisionKind.TICKET, DecisionKind.REJECT_INCOMPLETE, DecisionKind.REJECT_UNKNOWN_LICENSE,
    DecisionKind.REJECT_EXPIRED, DecisionKind.REJECT_SCOPE, DecisionKind.UNSUBSCRIBE,
})
"""Decisions that make mailbot write back to the sender."""

_NO_LICENSE_KINDS: Final = frozenset({"followup", "staff_reply", "ignore_auto", "unsubscribe"})


@dataclass(frozen=True, slots=True)
class Label:
    """What a labelled mail should be decided."""

    file: str
    expected: str
    license: str | None
    priority: str | None
    missing: tuple[str, ...]
    scope_reason: str | None
    ticket_ref: str | None
    notes: str = ""


def read_labels(directory: Path) -> list[Label]:
    """The labels of `directory/labels.jsonl`, in file order.

    Raises:
        ValueError: a line is not a JSON object with `file` and `expected`.
    """
    labels = []
    lines = (directory / "labels.jsonl").read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            labels.append(Label(
                file=str(obj["file"]), expected=str(obj["expected"]), license=obj.get("license"),
                priority=obj.get("priority"), missing=tuple(obj.get("missing") or ()),
                scope_reason=obj.get("scope_reason"), ticket_ref=obj.get("ticket_ref"),
                notes=str(obj.get("notes") or "")))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"labels.jsonl line {number}: {exc}") from None
    return labels


@dataclass(frozen=True, slots=True)
class Outcome:
    """One mail: its label, the decision and what differs."""

    label: Label
    decision: Decision
    problems: tuple[str, ...]

    @property
    def kind(self) -> str:
        return self.decision.kind.value


def _problems(label: Label, d: Decision) -> Iterator[str]:
    if d.kind.value != label.expected:
        yield f"decision {d.kind.value} != {label.expected}"
    if d.license != label.license:
        yield f"license {d.license} != {label.license}"
    if label.expected == "ticket" == d.kind.value:
        priority = d.priority.value if d.priority else None
        if priority != label.priority:
            yield f"priority {priority} != {label.priority}"
    if label.expected == "reject_incomplete" == d.kind.value and set(d.missing) != set(label.missing):
        yield f"missing {list(d.missing)} != {list(label.missing)}"
    if label.expected == "reject_scope" == d.kind.value and d.scope_reason != label.scope_reason:
        yield f"scope_reason {d.scope_reason} != {label.scope_reason}"
    if label.ticket_ref and d.ticket_ref != label.ticket_ref:
        yield f"ticket_ref {d.ticket_ref} != {label.ticket_ref}"


@dataclass
class Score:
    """The figures of one labelled directory."""

    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.outcomes)

    @property
    def decisions_right(self) -> int:
        return sum(o.kind == o.label.expected for o in self.outcomes)

    @property
    def licenses_right(self) -> int:
        return sum(o.decision.license == o.label.license for o in self.outcomes)

    @property
    def auto_answered(self) -> list[str]:
        """Automatic mail (bounces, auto-replies) that mailbot would answer: a loop."""
        return [o.label.file for o in self.outcomes
                if o.label.expected == "ignore_auto" and o.decision.kind in ANSWERED]

    @property
    def foreign_numbers(self) -> list[str]:
        """A number taken as the license that is not the labelled one (IČO, phone, another
        customer's license) on a mail that should carry a license or none."""
        return [o.label.file for o in self.outcomes
                if o.decision.license is not None
                and o.decision.license != o.label.license
                and not (o.label.license is None and o.label.expected in _NO_LICENSE_KINDS)]

    @property
    def misses(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.problems]

    def confusion(self) -> dict[str, Counter[str]]:
        """expected kind → Counter of decided kinds."""
        table: dict[str, Counter[str]] = {}
        for o in self.outcomes:
            table.setdefault(o.label.expected, Counter())[o.kind] += 1
        return table

    def per_kind(self) -> list[tuple[str, int, int, int]]:
        """(kind, labelled, decided, right) for every kind seen in labels or decisions."""
        labelled = Counter(o.label.expected for o in self.outcomes)
        decided = Counter(o.kind for o in self.outcomes)
        right = Counter(o.kind for o in self.outcomes if o.kind == o.label.expected)
        kinds = sorted(set(labelled) | set(decided))
        return [(k, labelled[k], decided[k], right[k]) for k in kinds]

    def as_json(self) -> dict[str, Any]:
        def pct(n: int) -> float:
            return round(100.0 * n / self.total, 2) if self.total else 100.0

        return {
            "mails": self.total,
            "decision_accuracy": pct(self.decisions_right),
            "license_accuracy": pct(self.licenses_right),
            "auto_answered": self.auto_answered,
            "foreign_numbers": self.foreign_numbers,
            "per_kind": {k: {"labelled": n, "decided": d, "right": r}
                         for k, n, d, r in self.per_kind()},
            "misses": [{"file": o.label.file, "problems": list(o.problems),
                        "hits": list(o.decision.hits), "notes": o.label.notes}
                       for o in self.misses],
        }


def anchors_from(directory: Path, labels: Sequence[Label],
                 settings: ClassifyConfig) -> dict[str, tuple[str, ...]]:
    """Second-opinion anchors learnt from a labelled directory: the request sentences (four
    words or more) of its out-of-scope mails under their scope reason, of its emergency
    tickets under `emergency`, and of its normal tickets under `in_scope` and `normal`.
    Scoring another directory with these measures the second opinion on wording it never saw."""
    from mailbot.classify.rules import MailFacts
    from mailbot.ingest.parse import parse

    anchors: dict[str, list[str]] = {}
    for label in labels:
        if label.expected == "reject_scope" and label.scope_reason:
            names = [label.scope_reason]
        elif label.expected == "ticket":
            names = ["emergency"] if label.priority == "emergency" else ["in_scope", "normal"]
        else:
            continue
        facts = MailFacts(parse((directory / label.file).read_bytes()), settings)
        texts = [t for t in facts.request_sentences if len(t.split()) >= 4]
        for name in names:
            anchors.setdefault(name, []).extend(texts)
    return {name: tuple(dict.fromkeys(texts)) for name, texts in anchors.items()}


def score(pairs: Iterable[tuple[Label, Decision]]) -> Score:
    """Compare each decision with its label."""
    return Score([Outcome(label, d, tuple(_problems(label, d))) for label, d in pairs])


def format_report(s: Score, title: str, timings: Sequence[tuple[str, float]] = ()) -> str:
    """The score as text: totals, the per-decision table, every miss, stage timings (ms/mail)."""
    def pct(n: int) -> str:
        return f"{100.0 * n / s.total:5.1f} %" if s.total else "  n/a"

    out = [title,
           f"  decisions  {pct(s.decisions_right)}  ({s.decisions_right}/{s.total})",
           f"  licenses   {pct(s.licenses_right)}  ({s.licenses_right}/{s.total})",
           f"  automatic mail answered: {len(s.auto_answered)} {s.auto_answered}",
           f"  foreign numbers taken as a license: {len(s.foreign_numbers)} {s.foreign_numbers}",
           "", f"  {'decision':<24}{'labelled':>9}{'decided':>9}{'right':>7}"]
    out += [f"  {k:<24}{n:>9}{d:>9}{r:>7}" for k, n, d, r in s.per_kind()]
    out += ["", f"  misses: {len(s.misses)}"]
    for o in s.misses:
        out.append(f"    {o.label.file}: {'; '.join(o.problems)}")
        out.append(f"        hits: {', '.join(o.decision.hits)}")
        if o.label.notes:
            out.append(f"        label: {o.label.notes}")
    if timings:
        out += ["", "  time per mail: " + ", ".join(f"{name} {ms:.2f} ms" for name, ms in timings)]
    return "\n".join(out)
