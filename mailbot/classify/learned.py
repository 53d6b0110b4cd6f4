"""A second opinion learnt from labelled mail: linear models over the request's word stems.

Phrase lists and anchor sentences are written by hand and hold on the wording they were
written for; a customer who paraphrases ("we open a second hotel in January, please set it
up completely like the first one") slips past them. These models are trained on labelled
sets (`mailbot model train`) and shipped as one JSON file (`classify.model.learned`):

- `scope`: softmax over `in_scope` and the four out-of-scope reasons, trained on the request
  text of tickets and out-of-scope rejections;
- `emergency`: softmax over `normal` and `emergency`, trained on tickets.

A request's features are those of :func:`mailbot.classify.opinion.features` (stems cut to
five letters, and pairs of neighbouring stems) over its sentences, each feature counted once.
Scoring is a sum of weights per label: deterministic (features summed in sorted order),
microseconds per mail, and auditable: :meth:`LinearModel.explain` names the features that
pushed a label up most, for the decision's reasons.

Training (:func:`train`) is plain stochastic gradient descent on the cross-entropy with
class-balanced weights and L2 decay, in a fixed order from a seeded shuffle: the same
examples give the same file, byte for byte.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from mailbot.classify.opinion import features

__all__ = ["FORMAT", "LinearModel", "TrainedModel", "request_features", "train"]

FORMAT: Final = "mailbot-linear-1"
"""The file format's name, checked on load."""

_DIGITS: Final = 5  # decimals kept of each weight in the file
_NUMBERS: Final = frozenset({int, float})  # what JSON numbers load as (not bool)


def _softmax(scores: Sequence[float]) -> list[float]:
    """Scores turned into probabilities that sum to 1."""
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


def request_features(sentences: Iterable[str]) -> tuple[str, ...]:
    """The features of a request's folded sentences, each once, sorted."""
    found: set[str] = set()
    for sentence in sentences:
        found.update(features(sentence))
    return tuple(sorted(found))


@dataclass(frozen=True, slots=True)
class LinearModel:
    """Softmax over `labels`: per label a bias, and per feature a weight for each label."""

    labels: tuple[str, ...]
    bias: tuple[float, ...]
    weights: Mapping[str, tuple[float, ...]]

    def scores(self, feats: Sequence[str]) -> list[float]:
        """Each label's linear score (bias plus the weights of the features it knows, added
        in the features' order: the same floats whichever branch adds them)."""
        rows = [w for w in map(self.weights.get, feats) if w is not None]
        if len(self.bias) == 2:  # the emergency and description models
            a, b = self.bias
            for w in rows:
                a += w[0]
                b += w[1]
            return [a, b]
        out = list(self.bias)
        for w in rows:
            for i, x in enumerate(w):
                out[i] += x
        return out

    def probabilities(self, feats: Sequence[str]) -> dict[str, float]:
        """Each label's probability for a request with features `feats` (sorted)."""
        return dict(zip(self.labels, _softmax(self.scores(feats))))

    def explain(self, feats: Sequence[str], label: str, n: int = 3) -> list[tuple[str, float]]:
        """The `n` features that favour `label` most over the labels' mean, strongest first."""
        i = self.labels.index(label)
        k = len(self.labels)
        lifts = []
        for f in feats:
            w = self.weights.get(f)
            if w is not None:
                lift = w[i] - sum(w) / k
                if lift > 0:
                    lifts.append((f, lift))
        lifts.sort(key=lambda item: (-item[1], item[0]))
        return lifts[:n]

    def as_json(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels),
            "bias": [round(b, _DIGITS) for b in self.bias],
            "weights": {f: [round(x, _DIGITS) for x in w] for f, w in sorted(self.weights.items())},
        }

    @classmethod
    def from_json(cls, data: Any, name: str) -> LinearModel:
        """A model from its JSON form; ValueError naming what is wrong."""
        if not isinstance(data, dict):
            raise ValueError(f"{name}: not an object")
        labels, bias, weights = data.get("labels"), data.get("bias"), data.get("weights")
        if (not isinstance(labels, list) or len(labels) < 2
                or not all(isinstance(x, str) for x in labels) or len(set(labels)) != len(labels)):
            raise ValueError(f"{name}.labels: two or more distinct names expected")
        k = len(labels)

        # Equal numbers and equal rows are one object each (the shipped file: 84,000 numbers,
        # 42,000 of them distinct; 27,700 rows, 20,900 distinct): ~1 MB less in every
        # process that holds the config, and a smaller pickle for the decision processes.
        same_number: dict[float, float] = {}
        same_row: dict[tuple[float, ...], tuple[float, ...]] = {}

        def row(value: Any, where: str) -> tuple[float, ...]:
            # Checked with C-level maps: the shipped file holds ~28,000 rows, read by every
            # process that loads the config. JSON's true and false are not numbers here.
            if (type(value) is not list or len(value) != k
                    or not set(map(type, value)) <= _NUMBERS
                    or not all(map(math.isfinite, value))):
                raise ValueError(f"{where}: {k} finite numbers expected")
            numbers = list(map(float, value))
            found = tuple(map(same_number.setdefault, numbers, numbers))
            return same_row.setdefault(found, found)

        if not isinstance(weights, dict):
            raise ValueError(f"{name}.weights: not an object")
        return cls(tuple(labels), row(bias, f"{name}.bias"),
                   {str(f): row(w, f"{name}.weights[{f!r}]") for f, w in weights.items()})


MODELS = ("scope", "emergency", "description")
"""The models a file may hold, in the file's order."""


@dataclass(frozen=True, slots=True)
class TrainedModel:
    """The models of one file, and what they were trained on (for the record)."""

    scope: LinearModel | None
    emergency: LinearModel | None
    trained_on: tuple[str, ...] = ()
    description: LinearModel | None = None  # "described" / "no_description" new requests

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": FORMAT, "trained_on": list(self.trained_on)}
        for name in MODELS:
            model = getattr(self, name)
            if model is not None:
                out[name] = model.as_json()
        return out

    def dumps(self) -> str:
        """The file's text: one feature per line (a retrained model diffs by feature),
        the same text for the same models."""
        def dump(value: Any) -> str:
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

        data = self.as_json()
        lines = [f'{{"format":{dump(data["format"])},', f'"trained_on":{dump(data["trained_on"])}']
        for name in MODELS:
            if name in data:
                model = data[name]
                lines[-1] += ","
                lines.append(f'"{name}":{{"labels":{dump(model["labels"])},'
                             f'"bias":{dump(model["bias"])},"weights":{{')
                rows = [f"{dump(f)}:{dump(w)}" for f, w in model["weights"].items()]
                lines.append(",\n".join(rows) + "}}")
        return "\n".join(lines) + "}\n"

    @classmethod
    def loads(cls, text: str) -> TrainedModel:
        """A model file's text parsed and checked; ValueError naming what is wrong."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} file (its \"format\" must be {FORMAT!r})")
        models = {name: LinearModel.from_json(data[name], name) if name in data else None
                  for name in MODELS}
        scope, emergency = models["scope"], models["emergency"]
        if scope is not None and "in_scope" not in scope.labels:
            raise ValueError("scope.labels: must include 'in_scope'")
        if emergency is not None and set(emergency.labels) != {"normal", "emergency"}:
            raise ValueError("emergency.labels: must be 'normal' and 'emergency'")
        description = models["description"]
        if description is not None and set(description.labels) != {"described",
                                                                    "no_description"}:
            raise ValueError("description.labels: must be 'described' and 'no_description'")
        trained_on = data.get("trained_on", [])
        if not isinstance(trained_on, list):
            raise ValueError("trained_on: a list expected")
        return cls(scope, emergency, tuple(str(x) for x in trained_on), description)


def train(examples: Sequence[tuple[Sequence[str], str]], labels: Sequence[str], *,
          against: str | None = None, epochs: int = 30, rate: float = 0.5,
          decay: float = 3e-3, min_count: int = 2, seed: int = 1) -> LinearModel:
    """A softmax model over `labels` from (features, label) examples.

    Features seen in fewer than `min_count` examples are left out (a word one mail used
    says more about that mail than about its kind). The examples of `against` weigh as much
    in total as those of all other labels together (a rare kind is not drowned by the many
    tickets); without `against`, each label weighs as much as every other."""
    labels = tuple(labels)
    index = {label: i for i, label in enumerate(labels)}
    counts: dict[str, int] = {}
    for feats, _ in examples:
        for f in set(feats):
            counts[f] = counts.get(f, 0) + 1
    kept = [(tuple(sorted(f for f in set(feats) if counts[f] >= min_count)), index[label])
            for feats, label in examples if label in index]
    if not kept:
        raise ValueError("no examples of the given labels")
    k = len(labels)
    per_class = [sum(1 for _, y in kept if y == i) for i in range(k)]
    if against is not None:
        base = index[against]
        rest = len(kept) - per_class[base]
        class_weight = [len(kept) / (2 * (per_class[i] if i == base else rest))
                        if per_class[i] and rest else 1.0 for i in range(k)]
    else:
        present = sum(1 for c in per_class if c)
        class_weight = [len(kept) / (present * c) if c else 0.0 for c in per_class]
    weights: dict[str, list[float]] = {}
    bias = [0.0] * k
    order = list(range(len(kept)))
    rnd = random.Random(seed)
    labels_k = range(k)
    shrink = 1 - rate * decay  # (the same values the update computed element by element)
    get = weights.get
    for _ in range(epochs):
        rnd.shuffle(order)
        for n in order:
            feats, y = kept[n]
            scores = list(bias)
            for f in feats:
                w = get(f)
                if w is not None:
                    for i in labels_k:
                        scores[i] += w[i]
            grad = [(p - (1.0 if i == y else 0.0)) * class_weight[y]
                    for i, p in enumerate(_softmax(scores))]
            step = [rate * g for g in grad]
            for i in labels_k:
                bias[i] -= rate * 0.1 * grad[i]
            for f in feats:
                w = get(f)
                if w is None:
                    w = weights[f] = [0.0] * k
                for i in labels_k:
                    w[i] = w[i] * shrink - step[i]
    return LinearModel(labels, tuple(bias),
                       {f: tuple(w) for f, w in sorted(weights.items())
                        if any(round(x, _DIGITS) for x in w)})
