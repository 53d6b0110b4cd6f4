"""Training the learned second opinion on labelled directories, and measuring it honestly.

`train_model` reads labelled directories (:mod:`mailbot.evaluate`'s layout) and fits the
models of :mod:`mailbot.classify.learned` on their tickets and out-of-scope rejections: the
request text as the rules see it (:attr:`MailFacts.request_sentences`), so training and
deciding read the same words. `cross_validate` holds out one directory at a time, trains on
the others and decides the held-out one with everything else as configured: the figure that
predicts what a set nobody tuned on will score.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from mailbot.classify.facts import SCOPE_LABELS, MailFacts
from mailbot.classify.learned import TrainedModel, train
from mailbot.classify.settings import ClassifyConfig
from mailbot.config import Config
from mailbot.evaluate import Score, read_labels, score

__all__ = ["EMERGENCY_LABELS", "SCOPE_MODEL_LABELS", "cross_validate", "decide_directory",
           "examples_of", "train_model", "with_model"]

SCOPE_MODEL_LABELS = ("in_scope", *SCOPE_LABELS)
EMERGENCY_LABELS = ("normal", "emergency")

Examples = list[tuple[tuple[str, ...], str]]


def examples_of(directory: Path, settings: ClassifyConfig) -> tuple[Examples, Examples]:
    """The training examples of one labelled directory: (scope, emergency). Scope: each
    ticket as `in_scope`, each out-of-scope rejection under its reason; emergency: each
    ticket under its priority. Other decisions say nothing of scope or urgency."""
    from mailbot.classify.learned import request_features
    from mailbot.ingest.parse import parse

    scope: Examples = []
    emergency: Examples = []
    for label in read_labels(directory):
        if label.expected == "ticket":
            names = ["in_scope"]
        elif label.expected == "reject_scope" and label.scope_reason in SCOPE_LABELS:
            names = [label.scope_reason]
        else:
            continue
        facts = MailFacts(parse((directory / label.file).read_bytes()), settings)
        feats = request_features(facts.request_sentences)
        scope.append((feats, names[0]))
        if label.expected == "ticket":
            emergency.append((feats, "emergency" if label.priority == "emergency" else "normal"))
    return scope, emergency


def train_model(directories: Sequence[Path], settings: ClassifyConfig,
                cache: dict[Path, tuple[Examples, Examples]] | None = None) -> TrainedModel:
    """The models trained on every mail of `directories` (their examples kept in `cache`)."""
    scope: Examples = []
    emergency: Examples = []
    for d in directories:
        if cache is None or d not in cache:
            found = examples_of(d, settings)
            if cache is not None:
                cache[d] = found
        else:
            found = cache[d]
        scope += found[0]
        emergency += found[1]
    return TrainedModel(
        scope=train(scope, SCOPE_MODEL_LABELS, against="in_scope") if scope else None,
        emergency=train(emergency, EMERGENCY_LABELS, against="normal") if emergency else None,
        trained_on=tuple(f"{d.name}: {n} mails" for d, n in
                         ((d, len(read_labels(d))) for d in directories)),
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
    import time

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
                   unverified: frozenset[Path] = frozenset()) -> list[tuple[Path, Score]]:
    """Each directory decided by models trained on all the others (leave one set out);
    `unverified` directories are decided without staff verification (no A-R headers)."""
    cache: dict[Path, tuple[Examples, Examples]] = {}
    out = []
    for held in directories:
        others = [d for d in directories if d != held]
        trained = train_model(others, config.classify, cache)
        result, _, _ = decide_directory(held, with_model(config, trained), now,
                                        verify_staff=held not in unverified)
        out.append((held, result))
    return out
