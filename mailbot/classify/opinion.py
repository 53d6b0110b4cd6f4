"""A second opinion where the phrase rules are silent: nearest anchors by word stems.

The configuration gives, per label, a few anchor sentences written in the customers' ways
of saying it (Czech, Slovak, English). A sentence is turned into features: each word folded,
stemmed by the Snowball Czech stemmer (PyStemmer) and cut to its first five letters (Czech
and Slovak inflect at the end: nastavit, nastavili, nastavení → nasta), plus each pair of
neighbouring stems; a negated verb becomes "ne" and its negated stem (nefunguje → ne,
ne_fungu), so "it works" shares nothing with "it does not work" but the negation. Features are weighted by their rarity among the anchors (idf) and compared by
cosine; a label's score is its best anchor's against the best request sentence or pair of
neighbouring sentences.

`AnchorModel.per_label` is pure and deterministic; `weigh` says whether one label leads
another by the configured threshold and margin, with the sentence and anchor that matched,
so a decision's reasons show why.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

import Stemmer

__all__ = ["AnchorModel", "Evidence", "features", "weigh"]

_WORD: Final = re.compile(r"[^\W\d_]{2,}")
_STEMMER: Final = Stemmer.Stemmer("czech")
_CUT: Final = 5
# Function words of cs/sk/en that carry no topic (folded); negation is kept apart.
_STOP: Final = frozenset(
    "a i o u v ve k ke s se z ze na do od po za pro pri pred nad pod je jsou jsem jsme jste "
    "byl byla bylo by bych byste bychom to ten ta ty tu tak tam tady ze ale nebo ani jak "
    "aby co kde kdy uz jeste jen take tiez som sme ste bol bola alebo ako aj len sa si mi ti "
    "nam vam nas vas mu mne ho jej "
    "the a an and or of to in on at for with from by is are was were be been it this that "
    "these those we you they our your their us me my i he she can could would will shall "
    "please prosim dobry den dekuji dakujem hello hi dear thanks regards".split())
_NEGATED: Final = re.compile(r"ne(?!j(?:lep|vic|vet|hor|dri|men|cast|spis)|bo$|z$|boli|mocn|del)"
                             r"[a-z]{3,}")


@lru_cache(maxsize=8192)
def _stem(word: str) -> tuple[str, ...]:
    """Features of one folded word: () for a stop word, ("ne", "ne_" + stem) for a negated
    verb (so "it works" never matches "it does not work"), else (stem,)."""
    if word in _STOP:
        return ()
    if _NEGATED.fullmatch(word):
        return ("ne", "ne_" + _STEMMER.stemWord(word[2:])[:_CUT])
    return (_STEMMER.stemWord(word)[:_CUT],)


def _stems(folded: str) -> list[str]:
    """The stems of one folded text, in order (stop words left out)."""
    stems: list[str] = []
    for word in _WORD.findall(folded):
        stems.extend(_stem(word))
    return stems


def _pairs(stems: Sequence[str]) -> list[str]:
    """The pairs of neighbouring stems (none starting at a negation marker)."""
    return [f"{a}_{b}" for a, b in zip(stems, stems[1:]) if a != "ne"]


def features(folded: str) -> tuple[str, ...]:
    """The features of one folded sentence: stems, then pairs of neighbouring stems."""
    stems = _stems(folded)
    return (*stems, *_pairs(stems))


class _Sentence:
    """What scoring needs of one folded sentence: its stems, and of its stems and pairs
    those the anchors know (a feature no anchor has cannot change any cosine)."""

    __slots__ = ("known_pairs", "known_stems", "stems")

    def __init__(self, folded: str, idf: Mapping[str, float]) -> None:
        self.stems = stems = _stems(folded)
        self.known_stems = [f for f in stems if f in idf]
        # A known pair is made of two known stems: only those pairs are spelt out.
        self.known_pairs = [pair for a, b in zip(stems, stems[1:])
                            if a != "ne" and a in idf and b in idf
                            and (pair := f"{a}_{b}") in idf]


class AnchorModel:
    """Anchor sentences per label, indexed by feature: a text is scored only against the
    anchors that share a feature with it (every other cosine is 0)."""

    def __init__(self, anchors: Mapping[str, Sequence[str]]) -> None:
        self.labels = tuple(anchors)
        entries = [(label, text) for label, texts in anchors.items() for text in texts]
        self._anchor_label = [label for label, _ in entries]
        self._anchor_text = [text for _, text in entries]
        spans: list[tuple[str, int, int]] = []
        for label, texts in anchors.items():
            lo = spans[-1][2] if spans else 0
            if texts:
                spans.append((label, lo, lo + len(texts)))
        self._spans = tuple(spans)  # (label, first, end) of each label's anchors, in order
        counted = [features(text) for _, text in entries]
        df: dict[str, int] = {}
        for feats in counted:
            for f in set(feats):
                df[f] = df.get(f, 0) + 1
        n = max(len(entries), 1)
        self._idf = {f: math.log((1 + n) / (1 + d)) + 1.0 for f, d in df.items()}
        self._postings: dict[str, list[tuple[int, float]]] = {}
        for i, feats in enumerate(counted):
            vector = self._vector(feats)
            for f, w in vector.items():
                self._postings.setdefault(f, []).append((i, w))

    def _vector(self, feats: Iterable[str]) -> dict[str, float]:
        """Unit-length idf weights of the features the anchors know (others cannot match),
        in the order the features first occur."""
        idf = self._idf
        weights: dict[str, float] = {}
        for f in feats:
            w = idf.get(f)
            if w is not None:
                weights[f] = weights.get(f, 0.0) + w
        norm = math.sqrt(sum(w * w for w in weights.values()))
        return {f: w / norm for f, w in weights.items()} if norm else {}

    def _cosines(self, feats: Iterable[str]) -> list[float]:
        """The cosine of a text (its features in order) with every anchor: only the postings
        of its features are visited, each anchor's sum running in the text's feature order."""
        out = [0.0] * len(self._anchor_label)
        postings = self._postings
        for f, w in self._vector(feats).items():
            for i, aw in postings[f]:
                out[i] += w * aw
        return out

    def scores(self, folded: str) -> list[float]:
        """The cosine of one folded text with every anchor."""
        return self._cosines(features(folded))

    def per_label(self, sentences: Sequence[str],
                  require: Mapping[str, Callable[[str], bool]] | None = None,
                  ) -> dict[str, Evidence]:
        """Each label's best score against one of `sentences` (or two neighbouring ones),
        with the text and the anchor that gave it; a label in `require` counts only texts
        its predicate accepts (an emergency needs words of failure, not just the topic).

        Ties go to the earlier text, then the earlier anchor. Each sentence is split into
        stems once; two neighbouring sentences "a b" have the stems of a then b, the pairs of
        a, the pair across, then the pairs of b (the features of the joined text)."""
        require = require or {}
        idf = self._idf
        parsed = [_Sentence(s, idf) for s in sentences]
        windows: list[tuple[str, list[str]]] = [
            (s, p.known_stems + p.known_pairs) for s, p in zip(sentences, parsed)]
        for a, b, pa, pb in zip(sentences, sentences[1:], parsed, parsed[1:]):
            feats = pa.known_stems + pb.known_stems + pa.known_pairs
            if pa.known_stems and pb.known_stems and pa.stems[-1] != "ne":
                across = f"{pa.stems[-1]}_{pb.stems[0]}"
                if across in idf:
                    feats.append(across)
            windows.append((f"{a} {b}", feats + pb.known_pairs))
        top: dict[str, tuple[float, str, int]] = {}  # label -> score, text, anchor index
        for text, feats in windows:
            if not feats:
                continue
            scores = self._cosines(feats)
            for label, lo, hi in self._spans:  # each label's anchors, in order
                span = scores[lo:hi]
                score = max(span)
                if score <= 0 or (label in top and score <= top[label][0]):
                    continue
                ok = require.get(label)
                if ok is not None and not ok(text):
                    continue
                top[label] = (score, text, lo + span.index(score))  # the first to score so
        anchors = self._anchor_text
        return {label: Evidence(label, score, text, anchors[i])
                for label, (score, text, i) in top.items()}


@dataclass(frozen=True, slots=True)
class Evidence:
    """A label's best match: the score, the request text and the anchor."""

    label: str
    score: float
    text: str
    anchor: str


def weigh(evidence: Mapping[str, Evidence], candidates: Sequence[str], against: str,
          threshold: float, margin: float) -> tuple[Evidence, float] | None:
    """The best of `candidates` when it scores at least `threshold` and leads the label
    `against` by at least `margin`; with that label's score (for the reasons). Else None."""
    found = [evidence[c] for c in candidates if c in evidence]
    if not found:
        return None
    top = max(found, key=lambda e: (e.score, e.label))
    other = evidence[against].score if against in evidence else 0.0
    if top.score >= threshold and top.score - other >= margin:
        return top, other
    return None
