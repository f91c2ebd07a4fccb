"""Reasons without an LLM, on real descriptions (../shared/eval captions) and real m3e-small."""

from __future__ import annotations

from index.ranking.reasons import MAX_REASON_CHARS, facets_of, match_reason
from index.search.calibration import Match, content_words, shared_words
from tests.support.core_fixtures import read_eval_captions


def _match(text: str, description: str, score: float = 80.0) -> Match:
    return Match(score, shared_words(content_words(text), description), 4.0)


def test_the_reason_names_the_words_the_text_and_the_photo_share() -> None:
    photos = read_eval_captions(200)
    dogs = [p for p in photos if any("狗" in c for c in p.captions[:4])]
    assert dogs, "the eval set has dog photos"
    for photo in dogs[:10]:
        description = "".join(photo.captions[:4])
        reason = match_reason(_match("周末带狗狗去玩", description), description)
        assert ("「狗」" in reason or "「狗狗」" in reason) and len(reason) <= MAX_REASON_CHARS
        assert reason not in description and "画面内容" not in reason


def test_a_long_compound_word_matches_by_its_parts_and_time_place_is_said() -> None:
    description = "主体：一只黑狗\n场景：蓝天下的草地\n氛围：欢快"
    match = _match("今天蓝天白云，小狗在草地上撒欢", description)
    assert set(match.words) >= {"蓝天", "草地"}
    assert facets_of(match.words, description) == ["场景"]
    reason = match_reason(match, description, "去年夏天 在大理")
    assert "场景" in reason and "去年夏天 在大理" in reason and len(reason) <= 40


def test_without_shared_words_the_reason_says_how_it_fits() -> None:
    photo = read_eval_captions(1)[0]
    description = "".join(photo.captions[:4])
    fits = match_reason(Match(70.0, (), 5.0), description)
    poor = match_reason(Match(20.0, (), 1.0), description)
    assert "意思相近" in fits and "匹配度70" in fits
    assert "大致相关" in poor and "匹配度20" in poor
