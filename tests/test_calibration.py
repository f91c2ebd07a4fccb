"""Calibrated match on real m3e-small vectors: what a shared word is worth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from index.models import Candidate
from index.ports import Vectors
from index.search.calibration import Calibrator, MatchParams, SampleSource, background_texts
from index.search.embed import SentenceTransformerEmbedder


class _NoLibrarySample(SampleSource):
    """The background without library vectors: only the fixed everyday descriptions."""

    def __init__(self) -> None:
        pass

    def vectors(self) -> Vectors | None:
        return None


def _calibrator(embedder: SentenceTransformerEmbedder) -> Calibrator:
    def query_vector(text: str) -> Vectors:
        return np.asarray(embedder.embed([text])[0], dtype=np.float32)

    return Calibrator(
        query_vector,
        _NoLibrarySample(),
        MatchParams(),
        fixed=lambda: np.asarray(embedder.embed(background_texts()), dtype=np.float32),
    )


def _candidate(photo_id: str, description: str, similarity: float) -> Candidate:
    return Candidate(photo_id, f"{photo_id}.jpg", similarity, description)


def test_a_shared_one_character_verb_is_weak_evidence_a_shared_noun_is_not(
    embedder: SentenceTransformerEmbedder,
) -> None:
    """微波炉热饭忘了拿出来 shares only 拿 with a cooking photo: a verb a description shares by
    chance, worth half the bonus of a shared noun at the same similarity."""
    calibrator = _calibrator(embedder)
    text = "微波炉热饭忘了拿出来"
    same = 0.80
    verb, noun, none = calibrator.matches(
        text,
        [
            _candidate("verb", "有一个人正在做饭。一个人拿着锅。", same),
            _candidate("noun", "厨房里的微波炉。", same),
            _candidate("none", "草地上奔跑的狗。", same),
        ],
    )
    assert verb.words == ("拿",) and noun.words == ("微波炉",) and none.words == ()
    assert none.z == verb.z == noun.z  # the same similarity: only the words differ
    assert none.score < verb.score < noun.score


def test_a_one_character_noun_counts_fully(embedder: SentenceTransformerEmbedder) -> None:
    """狗 and 猫 are whole subjects: a caption "一只猫一只狗。" earns the full bonus."""
    calibrator = _calibrator(embedder)
    (pets,) = calibrator.matches("一只猫一只狗。", [_candidate("pets", "沙发上的猫和狗。", 0.80)])
    assert set(pets.words) == {"猫", "狗"}
    p = MatchParams()
    full = 100.0 / (1.0 + math.exp(-(pets.z + p.word_bonus - p.z_fit) / p.z_scale))
    assert pets.score == pytest.approx(full, abs=0.15)
