"""Calibrated match: does a photo fit the text, and how well, on a 0–100 scale?

Raw cosine says little on its own: with m3e-small an unrelated text sits at 0.7–0.8 against
every photo and a good match at 0.85. What separates them is how far a photo stands above a
*background* for that text: the similarities of a random sample of the library's vectors and of
fixed everyday descriptions to the same query. The background is read robustly (its median and
the median distance from it), so a cluster of look-alike photos (a pet owner's hundreds of dog
photos, a first index of eleven alike) does not raise the bar for its own members.

A photo's evidence is its z-score against that background, raised when a content word of the
text occurs in its description, by how much the word says: a common word (人, 看, 工作: common
in everyday Chinese, by jieba's dictionary frequencies) earns nothing, a rare one (海边, 狗)
the full bonus. A one-character word never makes a fit on its own. The match (匹配度) is a
logistic of the evidence; a photo *fits* at 50 and up (`FIT`).

Descriptions differ by describer tier: the offline describer's are sparse and share a
vocabulary, so a photo described offline is judged by the offline tier's rule (`MatchParams`
per tier, measured on the offline-described eval library).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from index.models import Candidate
from index.ports import Vectors, VectorStore
from index.search.keyword import (
    DESCRIBED_AS,
    SUBJECT_CHARACTERS,
    tokenize,
    word_core,
    word_information,
)

log = logging.getLogger(__name__)

QueryVector = Callable[[str], Vectors]  # the text's unit vector, as the first stage embeds it
TierOf = Callable[[Candidate], str]  # the describer tier of a candidate's description
FIT = 50.0
_MAD_TO_SIGMA = 1.4826  # the median absolute deviation of a normal sample, in its σ


@dataclass(frozen=True)
class MatchParams:
    """Where evidence becomes a match. Measured on m3e-small over ../shared/eval (README)."""

    z_fit: float = 4.5  # evidence (background z-score + word bonus) of a photo that just fits
    z_scale: float = 0.6  # evidence units per e-fold of the logistic
    word_bonus: float = 1.5  # added for each shared word that says a lot (海边, 狗)
    weak_word_bonus: float = 1.0  # at most, for one-character words naming no subject (走, 拿)
    common_info: float = (
        5.5  # a word at most this informative (人 5.3) earns nothing, 工作 (6.8) little
    )
    rare_info: float = 9.0  # from this information on (海边, 狗), the full bonus
    nudge: float = 1.0  # how far words move a photo that fits in the order, at most
    context_bonus: float = 7.2  # a fitting photo of the time/place the text names
    sample_size: int = 512  # library vectors in the background sample
    described_forms: bool = False  # also look for the describer's word (男子 → 男人)


# The offline tier: sparse descriptions in a fixed vocabulary, alike in style, so the vector
# stands out less (a lower line), the shared words are more of the evidence and a text's 男子
# is the description's 男人.
OFFLINE_MATCH = MatchParams(
    z_fit=3.5, word_bonus=2.0, weak_word_bonus=1.0, nudge=1.5, described_forms=True
)


@dataclass(frozen=True)
class Match:
    """A candidate's calibrated match: 0–100 (50 and up: it fits), the shared words that
    say something (the reason names them: never 人 or 走 alone)."""

    score: float
    words: tuple[str, ...]
    z: float  # the photo's background z-score
    evidence: float = 0.0  # what the order follows; `score` is its logistic

    @property
    def fits(self) -> bool:
        return self.score >= FIT

    @classmethod
    def of_similarity(cls, similarity: float) -> Match:
        """Without a calibrator: every photo fits, its match is its similarity × 100."""
        score = round(max(0.0, similarity) * 100, 1)
        return cls(max(score, FIT), (), 0.0, similarity)

    @classmethod
    def of_filters(cls) -> Match:
        """A photo of the time/place a text asks for and nothing else: it fits."""
        return cls(FIT, (), 0.0, 0.0)


class SampleSource:
    """Random vectors of the library, read again when the number of photos changes."""

    def __init__(self, store: VectorStore, size: int, seed: int = 0) -> None:
        self._store = store
        self._size = size
        self._seed = seed
        self._lock = threading.Lock()
        self._count = -1
        self._vectors: Vectors | None = None

    def vectors(self) -> Vectors | None:
        count = self._store.count()
        with self._lock:
            if count != self._count:
                self._vectors = self._read(count)
                self._count = count
            return self._vectors

    def _read(self, count: int) -> Vectors | None:
        if count == 0:
            return None
        sample = self._store.sample(self._size, self._seed)
        log.debug("background sample: %d of %d vectors", len(sample), count)
        return np.asarray(sample, dtype=np.float32) if len(sample) else None


BACKGROUND_FILE = Path(__file__).with_name("background_zh.txt")


def background_texts(path: Path = BACKGROUND_FILE) -> list[str]:
    """The fixed everyday descriptions of the background (comments and blank lines skipped)."""
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _tier_unknown(candidate: Candidate) -> str:
    return ""


class Calibrator:
    """Turns a query's candidates into calibrated matches against a background: a random
    sample of the library plus fixed everyday descriptions embedded by the same model (so a
    small library whose photos are all alike still has something to stand out from)."""

    def __init__(
        self,
        query_vector: QueryVector,
        sample: SampleSource,
        params: MatchParams,
        fixed: Callable[[], Vectors] | None = None,
        *,
        tier_params: Mapping[str, MatchParams] | None = None,
        tier_of: TierOf = _tier_unknown,
    ):
        """`tier_params` are the rules of describer tiers other than `params`'s (by the name
        `tier_of` gives a candidate)."""
        self._query_vector = query_vector
        self._sample = sample
        self._params = params
        self._tier_params = dict(tier_params or {})
        self._tier_of = tier_of
        self._fixed_source = fixed
        self._fixed: Vectors | None = None
        self._fixed_lock = threading.Lock()

    def _fixed_vectors(self) -> Vectors | None:
        if self._fixed_source is None:
            return None
        with self._fixed_lock:
            if self._fixed is None:
                self._fixed = self._fixed_source()
            return self._fixed

    @property
    def params(self) -> MatchParams:
        return self._params

    def matches(self, text: str, candidates: Sequence[Candidate]) -> list[Match]:
        """One `Match` per candidate, in order."""
        if not candidates:
            return []
        center, spread = self._background(text)
        words = content_words(text)
        forms = described_forms(words)  # the offline describer's words for them
        every = [*words, *forms]
        weights = {core: self._weight(core) for w in every for core in {w, word_core(w)}}
        cjk = any(_is_cjk(w) for w in words)
        return [self._match(c, center, spread, words, forms, weights, cjk) for c in candidates]

    def in_context(self, match: Match) -> Match:
        """A fitting match of a photo of the time/place the text names: raised above every
        photo from elsewhere (the text asked for that time/place)."""
        evidence = match.evidence + self._params.context_bonus
        return Match(_score(evidence, self._params), match.words, match.z, evidence)

    def _background(self, text: str) -> tuple[float, float]:
        """The background's median and robust spread of similarities to the text."""
        parts = [v for v in (self._sample.vectors(), self._fixed_vectors()) if v is not None]
        if not parts or sum(len(v) for v in parts) < 2:
            return 0.0, 1.0
        similarities = np.concatenate(parts) @ self._query_vector(text)
        center = float(np.median(similarities))
        spread = _MAD_TO_SIGMA * float(np.median(np.abs(similarities - center)))
        return center, max(spread, 1e-3)

    def _weight(self, word: str) -> float:
        """How much a shared word says, 0..1, by its information in everyday Chinese."""
        p = self._params
        share = (word_information(word) - p.common_info) / (p.rare_info - p.common_info)
        return min(1.0, max(0.0, share))

    def _match(
        self,
        c: Candidate,
        center: float,
        spread: float,
        words: Sequence[str],
        forms: Sequence[str],
        weights: Mapping[str, float],
        cjk: bool,
    ) -> Match:
        p = self._tier_params.get(self._tier_of(c), self._params)
        shared = shared_words([*words, *forms] if p.described_forms else words, c.description)
        z = (c.similarity - center) / spread
        evidence = _lifted(z, _word_evidence(shared, weights, p), p)
        if not shared and not cjk:
            # "asdfghjkl", "。。。": nothing a description could be about; the vector alone
            # stands out for such strings, so it never makes them fit
            evidence = min(evidence, p.z_fit - 0.01)
        evidence += self._params.z_fit - p.z_fit  # one scale for every tier: 50 is the line
        telling = tuple(w for w in shared if _says_much(w) and weights[w] > 0)
        return Match(_score(evidence, self._params), telling, round(z, 3), round(evidence, 4))


def _lifted(z: float, words: float, p: MatchParams) -> float:
    """The evidence of a photo at `z` whose shared words add `words`. The words decide whether
    it fits (z + words at the line), but move it in the order by at most `nudge`: among the
    photos that fit, and among those that do not, the vector orders (a photo that shares the
    post's words fits; one that is closer in meaning still comes first)."""
    if z + words < p.z_fit:
        return z
    return max(p.z_fit, z + min(words, p.nudge))


def _word_evidence(shared: Sequence[str], weights: Mapping[str, float], p: MatchParams) -> float:
    """What the shared words add to the z-score: each by how much it says (`weights`); the
    one-character words that name no subject (人, 走, 看, 拿) together at most
    `weak_word_bonus` × the best one's weight (人 says nothing; 走 tips a photo next to the
    line, never lifts one from below)."""
    strong = sum(weights[w] for w in shared if _says_much(w))
    weak = max((weights[w] for w in shared if not _says_much(w)), default=0.0)
    return p.word_bonus * strong + p.weak_word_bonus * weak


def _says_much(word: str) -> bool:
    """A word of two characters or more, or a one-character subject (狗, 雪, 船)."""
    return len(word) > 1 or word in SUBJECT_CHARACTERS


def _score(evidence: float, p: MatchParams) -> float:
    score = 100.0 / (1.0 + math.exp(-(evidence - p.z_fit) / p.z_scale))
    return math.floor(score * 10) / 10


def content_words(text: str) -> list[str]:
    """The text's content words (jieba, no function words), each once; a long compound also
    gives its two-character parts (蓝天白云 → 蓝天, 天白, 白云)."""
    words: list[str] = []
    for word in tokenize(text):
        words.append(word)
        if len(word) >= 4 and all(_is_cjk(ch) for ch in word):
            words += [word[i : i + 2] for i in range(len(word) - 1)]
    return list(dict.fromkeys(words))


def described_forms(words: Sequence[str]) -> list[str]:
    """The forms a describer with a fixed vocabulary writes for these words (男子 → 男人:
    `DESCRIBED_AS`), those not among them already."""
    forms = (DESCRIBED_AS[w] for w in words if w in DESCRIBED_AS)
    return [f for f in dict.fromkeys(forms) if f not in words]


def _is_cjk(word: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in word)


def shared_words(words: Sequence[str], description: str) -> tuple[str, ...]:
    """The words (or their single-character core, 狗狗 → 狗, when the description does not
    hold the doubled word itself, as it holds 泡泡) that occur in the description: a word of two
    characters or more anywhere in it, a single character only as a word of its own (狗 in
    一只狗, not 行 in 自行车)."""
    found = []
    tokens: set[str] | None = None
    for word in words:
        core = word if len(word) > 1 and word in description else word_core(word)  # 泡泡
        if len(core) == 1:
            tokens = set(tokenize(description)) if tokens is None else tokens
            if core in tokens:
                found.append(core)
        elif core in description:
            found.append(core)
    return tuple(dict.fromkeys(found))
