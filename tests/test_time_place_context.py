"""Time and place words are context, not a wall: measured on a dated, geotagged library.

Sixty real photos of ../shared/eval, every one with an EXIF date over three years and a GPS
position written by the test; three dog photos and three photos without a dog are planted in
summer 2025 in 大理. P@5 = share of the top five that fit the text (a dog in the captions).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from index.search.embed import SentenceTransformerEmbedder
from index.service import PeiTu
from index.wiring import build_app
from tests.support.core_fixtures import EVAL_DIR, read_eval_captions
from tests.support.made_photos import DALI, HANGZHOU, MadePhoto, write_photo

NOW = datetime(2026, 11, 23, 10, 30)  # 去年夏天 = June-August 2025
SUMMER_2025 = datetime(2025, 7, 12, 15)
DOG_TEXT = "狗在草地上奔跑"


def _is_dog(captions: list[str]) -> bool:
    return any("狗" in c for c in captions[:4])


@pytest.fixture(scope="module")
def library(
    tmp_path_factory: pytest.TempPathFactory, m3e_path: Path, embedder: SentenceTransformerEmbedder
) -> tuple[PeiTu, set[str], set[str], set[str]]:
    """(app, dog photos, planted dog photos, planted photos without a dog) by path."""
    from config import load_settings

    root = tmp_path_factory.mktemp("dated")
    photos = read_eval_captions(400)
    dogs = [p for p in photos if _is_dog(p.captions)][:15]
    others = [p for p in photos if not _is_dog(p.captions)][:45]
    planted = {p.rel_path for p in dogs[:3] + others[:3]}
    lines = []
    for n, photo in enumerate(dogs + others):
        in_window = photo.rel_path in planted
        # everything else: spread over 2023-2025 outside summer 2025
        taken = SUMMER_2025 if in_window else datetime(2023, 1, 5) + timedelta(days=17 * n)
        if not in_window and datetime(2025, 6, 1) <= taken < datetime(2025, 9, 1):
            taken += timedelta(days=100)
        made = MadePhoto(photo.rel_path, "", taken, DALI if in_window else HANGZHOU)
        write_photo(root / "photos", made, Image.open(EVAL_DIR / "images" / photo.rel_path))
        description = "".join(photo.captions[:4])
        lines.append(json.dumps({"image": photo.rel_path, "description": description}))
    sidecar = root / "descriptions.jsonl"
    sidecar.write_text("\n".join(lines) + "\n", encoding="utf-8")
    settings = load_settings(
        library=root / "photos",
        data_dir=root / "data",
        embedding={"model": str(m3e_path)},
        rerank={"enabled": False},
    )
    app = build_app(settings, descriptions=sidecar, embedder=embedder, now=lambda: NOW)
    assert app.index().embedded == 60
    dog_paths = {p.rel_path for p in dogs}
    return app, dog_paths, dog_paths & planted, planted - dog_paths


def _top5(app: PeiTu, text: str) -> list[str]:
    return [r.path for r in app.recommend(text, 5, rerank=False).results]


def _precision(paths: list[str], relevant: set[str]) -> float:
    return sum(p in relevant for p in paths) / 5


@pytest.mark.parametrize("context", ["去年夏天，", "在大理，", "去年夏天在大理，"])
def test_a_time_or_place_word_puts_planted_fitting_photos_first_and_keeps_p_at_5(
    library: tuple[PeiTu, set[str], set[str], set[str]], context: str
) -> None:
    app, dogs, planted_dogs, planted_others = library
    plain = _top5(app, DOG_TEXT)
    with_context = _top5(app, context + DOG_TEXT)
    p_plain, p_context = _precision(plain, dogs), _precision(with_context, dogs)
    print(f"P@5 {DOG_TEXT!r}: {p_plain:.2f}; with {context!r}: {p_context:.2f}")
    # planted dog photos that fit the text come first (one of the three is a dog in the snow,
    # too far from 草地/奔跑 to fit), then dog photos from other times and places
    assert with_context[0] in planted_dogs and len(set(with_context[:3]) & planted_dogs) >= 2
    result = app.recommend(context + DOG_TEXT, 5, rerank=False)
    preferred = [r.path in planted_dogs and r.match >= 50 for r in result.results]
    assert preferred == sorted(preferred, reverse=True)
    assert p_context >= p_plain
    assert not set(with_context) & planted_others  # unrelated photos of that time stay out


def test_a_plain_post_with_a_weekend_word_loses_nothing(
    library: tuple[PeiTu, set[str], set[str], set[str]],
) -> None:
    app, _, _, _ = library
    # no photo is of last weekend: the word changes nothing but the note
    weekend = app.recommend("周末，" + DOG_TEXT, 5, rerank=False)
    assert [r.path for r in weekend.results] == _top5(app, DOG_TEXT)
    assert weekend.message is None  # a time word that changed nothing is not mentioned


def test_a_fitting_photo_of_that_time_counts_even_when_many_others_fit_the_words_better(
    library: tuple[PeiTu, set[str], set[str], set[str]],
    m3e_path: Path,
    embedder: SentenceTransformerEmbedder,
) -> None:
    """The time/place is searched as well as the library: with the first stage taking only the
    five nearest photos, the planted dog photos of last summer (not among the five nearest of
    the whole library) still come first, marked with the time, at the top 匹配度."""
    from config import load_settings

    app, _, planted_dogs, _ = library
    settings = load_settings(
        library=app.library,
        data_dir=app.catalog.path.parent,
        embedding={"model": str(m3e_path)},
        rerank={"enabled": False},
        top_k_initial=5,
        top_k_final=5,
    )
    narrow = build_app(settings, embedder=embedder, now=lambda: NOW)
    try:
        nearest = {r.path for r in narrow.recommend(DOG_TEXT, closest=True).results}
        assert planted_dogs - nearest  # some planted dog is not among the five nearest
        result = narrow.recommend("去年夏天，" + DOG_TEXT)
        first = [r for r in result.results if r.path in planted_dogs]
        assert len(first) >= 2 and result.results[: len(first)] == first
        assert all("拍于去年夏天" in r.reason for r in first)
        shown = [round(r.match) for r in result.results]
        assert shown == sorted(shown, reverse=True)
    finally:
        narrow.close()
