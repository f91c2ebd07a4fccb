"""Calibrated match on real m3e-small vectors: what a shared word is worth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from index.library.descriptions import tier_of
from index.models import Candidate
from index.ports import Vectors
from index.search.calibration import (
    FIT,
    OFFLINE_MATCH,
    Calibrator,
    Match,
    MatchParams,
    SampleSource,
    background_texts,
)
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


def _at_z(calibrator: Calibrator, text: str, z: float) -> float:
    """The similarity at which a photo stands `z` above this text's background."""
    center, spread = calibrator._background(text)
    return center + z * spread


def _under_the_line(
    calibrator: Calibrator, text: str, under: float, descriptions: list[str]
) -> list[Match]:
    """The matches of photos with these descriptions, all `under` z-units under the line."""
    similarity = _at_z(calibrator, text, MatchParams().z_fit - under)
    photos = [_candidate(str(n), d, similarity) for n, d in enumerate(descriptions)]
    return calibrator.matches(text, photos)


def test_a_word_that_says_much_decides_a_fit_a_one_character_verb_does_not(
    embedder: SentenceTransformerEmbedder,
) -> None:
    """微波炉热饭忘了拿出来, 1.2 z-units under the line: a shared 微波炉 makes the photo fit (at
    the line: words decide fits, the vector orders), a shared 拿 does not (it tips only a photo
    next to the line), and the photos that do not fit keep their vector's place."""
    verb, noun, none = _under_the_line(
        _calibrator(embedder),
        "微波炉热饭忘了拿出来",
        1.2,
        ["有一个人正在做饭。一个人拿着锅。", "厨房里的微波炉。", "草地上奔跑的狗。"],
    )
    assert verb.words == () and noun.words == ("微波炉",) and none.words == ()  # 拿 says little
    assert none.z == verb.z == noun.z  # the same similarity: only the words differ
    assert noun.fits and noun.score == pytest.approx(FIT, abs=0.5)
    assert not (verb.fits or none.fits) and verb.score == none.score < noun.score


def test_a_word_tips_a_photo_next_to_the_line_by_how_much_it_says(
    embedder: SentenceTransformerEmbedder,
) -> None:
    """A third of a unit under the line: 人 says nothing (the photo stays unfit), 拿 tips it,
    微波炉 tips it and moves it further up the order."""
    person, verb, noun = _under_the_line(
        _calibrator(embedder),
        "微波炉热饭忘了拿出来，一个人吃",
        0.3,
        ["一个人。", "一个人拿着锅。", "厨房里的微波炉。"],
    )
    assert not person.fits and person.words == ()
    assert verb.fits and noun.fits and noun.score > verb.score


def test_a_one_character_word_tips_only_a_photo_next_to_the_line(
    embedder: SentenceTransformerEmbedder,
) -> None:
    """一个人的旅行，走走停停: 人 says nothing, 走 a little; a photo just under the line is
    tipped over it, one two units under is not."""
    calibrator = _calibrator(embedder)
    text = "一个人的旅行，走走停停"
    p = MatchParams()
    near = _at_z(calibrator, text, p.z_fit - 0.1)
    far = _at_z(calibrator, text, p.z_fit - 2.0)
    tipped, kept = calibrator.matches(
        text, [_candidate("near", "一个人在街上走。", near), _candidate("far", "一个人在走。", far)]
    )
    assert tipped.fits and not kept.fits
    assert tipped.words == kept.words == ()  # the reason names no 人 or 走


def test_a_word_counts_by_how_much_it_says(embedder: SentenceTransformerEmbedder) -> None:
    """At the same similarity just under the line, 工作 (everywhere in everyday Chinese, by
    jieba's frequencies) raises a photo less than 海边; a one-character subject (狗) counts like
    a word."""
    calibrator = _calibrator(embedder)
    p = MatchParams()
    scores = {}
    for text, description in (
        ("又被拉进一个工作群", "一个男人在办公室工作。"),
        ("周末去海边", "一个孩子在海边玩。"),
        ("我家的狗", "草地上的一只狗。"),
    ):
        (match,) = calibrator.matches(
            text, [_candidate("p", description, _at_z(calibrator, text, p.z_fit - 0.3))]
        )
        scores[text] = match
    assert scores["周末去海边"].fits and scores["我家的狗"].fits
    assert scores["又被拉进一个工作群"].score < scores["周末去海边"].score


def test_the_order_is_the_match_and_the_match_rounds_the_evidence(
    embedder: SentenceTransformerEmbedder,
) -> None:
    calibrator = _calibrator(embedder)
    text = "海边的狗在奔跑"
    p = MatchParams()
    candidates = [
        _candidate(str(i), d, _at_z(calibrator, text, z))
        for i, (d, z) in enumerate(
            [("海边奔跑的狗。", 3.0), ("城市夜景。", 6.0), ("沙发上的猫。", 1.0), ("海边。", 4.2)]
        )
    ]
    matches = calibrator.matches(text, candidates)
    by_evidence = sorted(matches, key=lambda m: -m.evidence)
    assert [m.score for m in by_evidence] == sorted((m.score for m in matches), reverse=True)
    for m in matches:
        expected = 100.0 / (1.0 + math.exp(-(m.evidence - p.z_fit) / p.z_scale))
        assert m.score == pytest.approx(expected, abs=0.1)


def test_a_photo_described_offline_is_judged_by_the_offline_tiers_line(
    embedder: SentenceTransformerEmbedder,
) -> None:
    """The offline describer's descriptions are sparse and alike: the same description at the
    same similarity fits when it is the offline describer's (its line is lower) and not when it
    is a caption's; a text's 男子 counts as the offline description's 男人."""
    base = _calibrator(embedder)
    calibrator = Calibrator(
        base._query_vector,
        _NoLibrarySample(),
        MatchParams(),
        fixed=lambda: np.asarray(embedder.embed(background_texts()), dtype=np.float32),
        tier_params={"offline": OFFLINE_MATCH},
        tier_of=lambda c: tier_of(str(c.metadata.get("describer", ""))),
    )
    text = "一个男子站在路边"
    description = "主体：一个男人\n人物动作：穿黑色衣服的男人\n（离线描述，未经视觉模型）"
    between = _at_z(calibrator, text, (OFFLINE_MATCH.z_fit + MatchParams().z_fit) / 2 - 1.0)
    offline, caption = calibrator.matches(
        text,
        [
            Candidate("a", "a.jpg", between, description, {"describer": "offline@v3"}),
            Candidate("b", "b.jpg", between, description, {"describer": "sidecar:1234"}),
        ],
    )
    assert offline.words == ("男人",) and caption.words == ()
    assert offline.fits and not caption.fits
