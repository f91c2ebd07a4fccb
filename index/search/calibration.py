"""Calibrated match: does a photo fit the text, and how well, on a 0–100 scale?

Raw cosine says little on its own: with m3e-small an unrelated text sits at 0.7–0.8 against
every photo and a good match at 0.85. What separates them is how far a photo stands above the
library's *background* for that text: the similarities of a random sample of the library's
vectors to the same query. A photo's evidence is its z-score against that background, raised
when a content word of the text occurs in its description (jieba words, `index.search.keyword`): by
the full bonus for a word of two characters or more or a one-character noun (狗), by half for
another one-character word (拿, 等, 用: a verb or particle a description shares by chance).
The match (匹配度) is a logistic of that evidence; a photo *fits* at `MatchParams.fit` and up.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from index.models import Candidate
from index.ports import Vectors, VectorStore
from index.search.keyword import single_character_nouns, tokenize, word_core

log = logging.getLogger(__name__)

QueryVector = Callable[[str], Vectors]  # the text's unit vector, as the first stage embeds it


@dataclass(frozen=True)
class MatchParams:
    """Where evidence becomes a match. Measured on m3e-small over ../shared/eval (README)."""

    z_fit: float = 4.5  # evidence (background z-score + word bonus) of a photo that just fits
    z_scale: float = 0.6  # evidence units per e-fold of the logistic
    word_bonus: float = 2.5  # added when a content word of the text is in the description
    weak_word_bonus: float = 1.25  # instead, when the only such words are one-character non-nouns
    sample_size: int = 512  # library vectors in the background sample


@dataclass(frozen=True)
class Match:
    """A candidate's calibrated match: 0–100 (50 and up: it fits), the words it shares."""

    score: float
    words: tuple[str, ...]
    z: float  # the photo's background z-score

    @property
    def fits(self) -> bool:
        return self.score >= FIT


FIT = 50.0


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
    ):
        self._query_vector = query_vector
        self._sample = sample
        self._params = params
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
        mean, spread = self._background(text)
        words = content_words(text)
        nouns = single_character_nouns(text)
        return [self._match(c, mean, spread, words, nouns) for c in candidates]

    def _background(self, text: str) -> tuple[float, float]:
        parts = [v for v in (self._sample.vectors(), self._fixed_vectors()) if v is not None]
        if not parts or sum(len(v) for v in parts) < 2:
            return 0.0, 1.0
        similarities = np.concatenate(parts) @ self._query_vector(text)
        return float(similarities.mean()), max(float(similarities.std()), 1e-3)

    def _match(
        self,
        c: Candidate,
        mean: float,
        spread: float,
        words: Sequence[str],
        nouns: frozenset[str],
    ) -> Match:
        p = self._params
        shared = shared_words(words, c.description)
        z = (c.similarity - mean) / spread
        evidence = z + self._word_bonus(shared, nouns)
        if not shared and not any(_is_cjk(w) for w in words):
            # "asdfghjkl", "。。。": nothing a description could be about; the vector alone
            # stands out for such strings, so it never makes them fit
            evidence = min(evidence, p.z_fit - 0.01)
        score = 100.0 / (1.0 + math.exp(-(evidence - p.z_fit) / p.z_scale))
        return Match(math.floor(score * 10) / 10, shared, round(z, 3))

    def _word_bonus(self, shared: Sequence[str], nouns: frozenset[str]) -> float:
        if not shared:
            return 0.0
        if any(len(word) > 1 or word in nouns for word in shared):
            return self._params.word_bonus
        return self._params.weak_word_bonus


def content_words(text: str) -> list[str]:
    """The text's content words (jieba, no function words), each once; a long compound also
    gives its two-character parts (蓝天白云 → 蓝天, 天白, 白云)."""
    words: list[str] = []
    for word in tokenize(text):
        words.append(word)
        if len(word) >= 4 and all(_is_cjk(ch) for ch in word):
            words += [word[i : i + 2] for i in range(len(word) - 1)]
    return list(dict.fromkeys(words))


def _is_cjk(word: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in word)


def shared_words(words: Sequence[str], description: str) -> tuple[str, ...]:
    """The words (or their single-character core, 狗狗 → 狗) that occur in the description:
    a word of two characters or more anywhere in it, a single character only as a word of its
    own (狗 in 一只狗, not 行 in 自行车)."""
    found = []
    tokens: set[str] | None = None
    for word in words:
        core = word_core(word)
        if len(core) == 1:
            tokens = set(tokenize(description)) if tokens is None else tokens
            if core in tokens:
                found.append(core)
        elif core in description:
            found.append(core)
    return tuple(dict.fromkeys(found))
