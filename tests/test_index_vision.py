"""Indexing through the vision endpoint: bad files, failing photos, resuming, rerank fallbacks."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from config.settings import RerankSettings, VisionSettings
from index.search.embed import SentenceTransformerEmbedder
from index.service import PeiTu
from index.wiring import build_app
from tests.support import badfiles
from tests.support.core_fixtures import SettingsFactory, SmallLibrary
from tests.support.openai_server import FakeOpenAIServer


def _vision_app(
    make_settings: SettingsFactory,
    embedder: SentenceTransformerEmbedder,
    vision: VisionSettings,
    library: Path,
    **overrides: object,
) -> PeiTu:
    settings = make_settings(library=library, vision=vision.model_dump(), **overrides)
    return build_app(settings, embedder=embedder)


def test_bad_files_are_skipped_by_reason_and_good_ones_indexed(
    tmp_path: Path,
    make_settings: SettingsFactory,
    embedder: SentenceTransformerEmbedder,
    fake_vision_settings: VisionSettings,
    openai_server: FakeOpenAIServer,
) -> None:
    library = tmp_path / "lib"
    expected_skips = badfiles.make_bad_library(library)
    indexing = {
        "max_file_mb": badfiles.MAX_FILE_BYTES / 1024 / 1024,
        "max_pixels": badfiles.MAX_PIXELS,
    }
    try:
        app = _vision_app(make_settings, embedder, fake_vision_settings, library, indexing=indexing)
        report = app.index()
    finally:
        badfiles.unlock(library)
    enforced = badfiles.permissions_enforced(tmp_path)
    photos = badfiles.expected_photos(permissions_enforced=enforced)
    assert report.skipped == expected_skips
    assert (report.scanned, report.failed) == (len(photos), 0)
    # Copies (a symlink, byte-identical files) are one photo: described and stored once.
    assert report.new + report.unchanged == report.scanned and report.unchanged >= 2
    assert report.described == report.new == openai_server.calls["vision"] == app.store.count()


def test_a_photo_the_model_fails_on_is_counted_and_retried_next_run(
    tmp_path: Path,
    make_settings: SettingsFactory,
    embedder: SentenceTransformerEmbedder,
    fake_vision_settings: VisionSettings,
    openai_server: FakeOpenAIServer,
) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    for i, rgb in enumerate([(20, 60, 230), (30, 160, 50), (240, 240, 240)]):
        Image.new("RGB", (300, 200), rgb).save(library / f"p{i}.jpg")
    vision = fake_vision_settings.model_copy(update={"concurrency": 1, "max_retries": 1})
    app = _vision_app(make_settings, embedder, vision, library)
    openai_server.set_mode("vision", fail_status=500, fail_times=2)  # first photo: both tries
    first = app.index()
    assert (first.described, first.failed, first.embedded) == (2, 1, 2)
    assert first.errors and "HTTP 500" in first.errors[0]
    calls_before = openai_server.calls["vision"]
    second = app.index()
    assert (second.described, second.failed, second.embedded) == (1, 0, 1)
    assert openai_server.calls["vision"] == calls_before + 1  # only the failed photo again


def _reranking_app(
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    embedder: SentenceTransformerEmbedder,
    rerank: RerankSettings,
) -> PeiTu:
    settings = make_settings(library=small_library.root, rerank=rerank.model_dump())
    app = build_app(settings, descriptions=small_library.descriptions, embedder=embedder)
    app.index()
    return app


def test_rerank_orders_by_the_llm_and_gives_its_reasons(
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    embedder: SentenceTransformerEmbedder,
    fake_rerank_settings: RerankSettings,
    openai_server: FakeOpenAIServer,
) -> None:
    app = _reranking_app(make_settings, small_library, embedder, fake_rerank_settings)
    result = app.recommend("两只狗在雪地里打闹")
    assert result.reranked and result.message is None
    scores = [r.score for r in result.results]
    assert scores == sorted(scores, reverse=True)
    assert all(r.reason.startswith("与「两只狗在雪地里打闹」相关") for r in result.results)
    assert openai_server.calls["rerank"] == 1


@pytest.mark.parametrize(
    "mode",
    [
        {"delay_s": 3.0},
        {"malformed": True},
        {"wrong_schema": True},
        {"fail_status": 500, "fail_times": 9},
    ],
    ids=["timeout", "malformed", "wrong-schema", "http-500"],
)
def test_rerank_failure_falls_back_to_the_match_order(
    mode: dict[str, object],
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    embedder: SentenceTransformerEmbedder,
    fake_rerank_settings: RerankSettings,
    openai_server: FakeOpenAIServer,
) -> None:
    rerank = fake_rerank_settings.model_copy(update={"timeout_s": 0.5, "max_retries": 0})
    app = _reranking_app(make_settings, small_library, embedder, rerank)
    first_stage = [r.photo_id for r in app.recommend("两只狗在雪地里打闹", rerank=False).results]
    openai_server.set_mode("rerank", **mode)
    result = app.recommend("两只狗在雪地里打闹")
    assert not result.reranked
    assert result.message == "排序模型暂时不可用，已按匹配度排序。"  # no URL, no English
    assert result.rerank.reason  # the English detail stays in the JSON and the log
    assert len(first_stage) == 5 and [r.photo_id for r in result.results] == first_stage
    # the fallback reason names what matched, and the score is the calibrated match
    assert all("「狗」" in r.reason and len(r.reason) <= 40 for r in result.results)
    assert all(r.score == round(r.match / 100, 4) for r in result.results)
