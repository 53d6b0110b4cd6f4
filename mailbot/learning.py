"""Training the learned second opinion on labelled directories, and measuring it honestly.

`train_model` reads labelled directories (:mod:`mailbot.evaluate`'s layout) and fits the
models of :mod:`mailbot.classify.learned` on their tickets and out-of-scope rejections: the
request text as the rules see it (:attr:`MailFacts.request_sentences`), so training and
deciding read the same words. `cross_validate` holds out one directory at a time, trains on
the others and decides the held-out one with everything else as configured: the figure that
predicts what a set nobody tuned on will score.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mailbot.classify.facts import SCOPE_LABELS, MailFacts
from mailbot.classify.learned import TrainedModel, train
from mailbot.classify.settings import ClassifyConfig
from mailbot.config import Config
from mailbot.evaluate import Score, read_labels, score

__all__ = ["DESCRIPTION_LABELS", "EMERGENCY_LABELS", "SCOPE_MODEL_LABELS", "DirectoryExamples",
           "cross_validate", "decide_directory", "examples_of", "train_model", "with_model"]

SCOPE_MODEL_LABELS = ("in_scope", *SCOPE_LABELS)
EMERGENCY_LABELS = ("normal", "emergency")
DESCRIPTION_LABELS = ("described", "no_description")
NEW_REQUESTS = frozenset({"ticket", "reject_scope", "reject_unknown_license", "reject_expired",
                          "reject_incomplete"})

Examples = list[tuple[tuple[str, ...], str]]


@dataclass(frozen=True, slots=True)
class DirectoryExamples:
    """What one labelled directory gives the training: scope, emergency and description
    examples, and how many mails it holds (for the model file's record)."""

    scope: Examples
    emergency: Examples
    description: Examples
    mails: int


def examples_of(directory: Path, settings: ClassifyConfig) -> DirectoryExamples:
    """The training examples of one labelled directory. Scope: each ticket as `in_scope`,
    each out-of-scope rejection under its reason; emergency: each ticket under its priority;
    description: each new request, `no_description` where the label says it lacks one.
    Other decisions say nothing of these."""
    from mailbot.classify.learned import request_features
    from mailbot.ingest.parse import parse

    scope: Examples = []
    emergency: Examples = []
    description: Examples = []
    labels = read_labels(directory)
    for label in labels:
        if label.expected not in NEW_REQUESTS:
            continue
        facts = MailFacts(parse((directory / label.file).read_bytes()), settings)
        feats = request_features(facts.request_sentences)
        lacking = label.expected == "reject_incomplete" and "description" in (label.missing or ())
        description.append((feats, "no_description" if lacking else "described"))
        if label.expected == "ticket":
            scope.append((feats, "in_scope"))
            emergency.append((feats, "emergency" if label.priority == "emergency" else "normal"))
        elif label.expected == "reject_scope" and label.scope_reason in SCOPE_LABELS:
            scope.append((feats, label.scope_reason))
    return DirectoryExamples(scope, emergency, description, len(labels))


def train_model(directories: Sequence[Path], settings: ClassifyConfig,
                cache: dict[Path, DirectoryExamples] | None = None) -> TrainedModel:
    """The models trained on every mail of `directories` (each directory read once into
    `cache`, when one is given)."""
    cache = {} if cache is None else cache
    for d in directories:
        if d not in cache:
            cache[d] = examples_of(d, settings)
    found = [cache[d] for d in directories]
    scope = [x for f in found for x in f.scope]
    emergency = [x for f in found for x in f.emergency]
    description = [x for f in found for x in f.description]
    return TrainedModel(
        scope=train(scope, SCOPE_MODEL_LABELS, against="in_scope") if scope else None,
        emergency=train(emergency, EMERGENCY_LABELS, against="normal") if emergency else None,
        description=(train(description, DESCRIPTION_LABELS, against="described")
                     if any(label == "no_description" for _, label in description) else None),
        trained_on=tuple(f"{d.name}: {f.mails} mails" for d, f in zip(directories, found)),
    )


def with_model(config: Config, trained: TrainedModel | None) -> Config:
    """`config` deciding with `trained` as its learned models (None: without any)."""
    model = config.classify.model.model_copy(update={"trained": trained})
    classify = config.classify.model_copy(update={"model": model})
    return config.model_copy(update={"classify": classify})


def decide_directory(directory: Path, config: Config, now: datetime,
                     verify_staff: bool = True) -> tuple[Score, float, float]:
    """Decide every labelled mail of `directory`: the score, and seconds spent parsing and
    deciding."""
    from mailbot.classify.decide import decide
    from mailbot.classify.rules import RuleContext
    from mailbot.ingest.parse import parse
    from mailbot.registry import DictRegistry, read_license_file

    conversation = config.conversation.model_copy(update={"verify_staff": verify_staff})
    config = config.model_copy(update={"conversation": conversation})
    records, errors = read_license_file(directory / "licenses.csv")
    if errors:
        raise ValueError(f"{directory / 'licenses.csv'}: {errors[0]}")
    ctx = RuleContext.from_config(config, DictRegistry({r.license: r for r in records}), now,
                                  None)
    pairs = []
    parse_s = decide_s = 0.0
    for label in read_labels(directory):
        raw = (directory / label.file).read_bytes()
        t0 = time.perf_counter()
        mail = parse(raw)
        t1 = time.perf_counter()
        decision = decide(mail, ctx)
        decide_s += time.perf_counter() - t1
        parse_s += t1 - t0
        pairs.append((label, decision))
    return score(pairs), parse_s, decide_s


def cross_validate(directories: Sequence[Path], config: Config, now: datetime,
                   unverified: Sequence[Path] = (), *, jobs: int = 1) -> list[tuple[Path, Score]]:
    """Each directory decided by models trained on all the others (leave one set out);
    `unverified` directories are decided without staff verification (no A-R headers).
    `jobs` processes hold out a directory each at a time (the result is the same)."""
    without_ar = frozenset(d.resolve() for d in unverified)
    held_out = list(directories)
    if jobs <= 1 or len(held_out) <= 1:
        fold = _Folds(tuple(held_out), config, now, without_ar)
        return [(held, fold(held)) for held in held_out]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=min(jobs, len(held_out)),
                             mp_context=multiprocessing.get_context("spawn"),
                             initializer=_start_folds,
                             initargs=(tuple(held_out), config, now, without_ar)) as pool:
        return list(zip(held_out, pool.map(_fold, held_out)))


class _Folds:
    """Leave-one-set-out folds over `directories`, each directory's examples read once."""

    def __init__(self, directories: tuple[Path, ...], config: Config, now: datetime,
                 without_ar: frozenset[Path]) -> None:
        self.directories, self.config, self.now = directories, config, now
        self.without_ar = without_ar
        self.cache: dict[Path, DirectoryExamples] = {}

    def __call__(self, held: Path) -> Score:
        others = [d for d in self.directories if d != held]
        trained = train_model(others, self.config.classify, self.cache)
        result, _, _ = decide_directory(held, with_model(self.config, trained), self.now,
                                        verify_staff=held.resolve() not in self.without_ar)
        return result


_WORKER_FOLDS: _Folds | None = None


def _start_folds(directories: tuple[Path, ...], config: Config, now: datetime,
                 without_ar: frozenset[Path]) -> None:
    global _WORKER_FOLDS
    _WORKER_FOLDS = _Folds(directories, config, now, without_ar)


def _fold(held: Path) -> Score:
    assert _WORKER_FOLDS is not None
    return _WORKER_FOLDS(held)
