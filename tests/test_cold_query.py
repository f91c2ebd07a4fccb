"""What a cold query loads and what it keeps for the next process: the place names and the
calibration's fixed vectors from caches, no LLM client without a key, and a warm-up that runs
the query path once (the server and the bot call it at start-up)."""

from __future__ import annotations

from pathlib import Path

import GeoToolCN
import numpy as np

from index.models import NoteKind, RerankState
from index.search import segmenter
from index.search.calibration import background_texts
from index.search.embed import SentenceTransformerEmbedder
from index.understanding.geo import Gazetteer
from index.wiring import build_app, fixed_background
from tests.support.core_fixtures import SettingsFactory, SmallLibrary
from tests.test_scale_paths import CountingEmbedder


def test_place_names_from_the_cache_are_the_gazetteers_own() -> None:
    cached = Gazetteer().known_names()
    assert cached == Gazetteer(GeoToolCN.GeoTool()).known_names()
    assert cached["大理"].full_names == ("大理市", "大理白族自治州")


def test_the_fixed_background_is_embedded_once_per_model_and_texts(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    counting = CountingEmbedder(embedder)
    first = fixed_background(counting, tmp_path)
    again = fixed_background(counting, tmp_path)
    assert counting.texts == background_texts()  # the second call read the cache
    assert first.dtype == np.float32 and first.shape == (len(background_texts()), 512)
    assert np.array_equal(first, again)
    assert np.allclose(first, embedder.embed(background_texts()), atol=1e-6)
    assert np.array_equal(fixed_background(counting, None), first)  # no cache: embedded again
    assert len(counting.texts) == 2 * len(background_texts())


def test_rerank_without_a_key_is_off_and_says_why(
    make_settings: SettingsFactory, small_library: SmallLibrary
) -> None:
    settings = make_settings(library=small_library.root, rerank={"enabled": True})
    assert settings.rerank.api_key is None
    app = build_app(settings, descriptions=small_library.descriptions)
    app.index()
    result = app.recommend("小狗在草地上奔跑", closest=True)
    assert result.results and result.rerank.state is RerankState.OFF
    assert [note.kind for note in result.notes] == [NoteKind.RERANK_OFF]
    assert "DASHSCOPE_API_KEY" in result.notes[0].text
    app.close()


def test_warm_up_runs_the_query_path_once(
    make_settings: SettingsFactory, small_library: SmallLibrary, tmp_path: Path
) -> None:
    settings = make_settings(library=small_library.root, visual={"backend": "off"})
    app = build_app(settings, descriptions=small_library.descriptions)
    app.index()
    cache = tmp_path / "data" / "cache"
    assert not list(cache.glob("background-*"))
    app.warm_up()
    assert list(cache.glob("background-*"))  # the calibration ran: a whole query did
    assert len(segmenter.default_segmenter().dictionary.freq) > 300_000  # read whole
    app.close()
