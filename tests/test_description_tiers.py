"""Description tiers: imported captions > vision model > offline; a run never downgrades."""

from __future__ import annotations

import threading
from pathlib import Path

from config.settings import VisionSettings
from index.library.descriptions import DescriptionRow, best_of, should_describe, tier_of
from index.search.embed import SentenceTransformerEmbedder
from index.service import PeiTu
from index.wiring import build_app
from tests.support.core_fixtures import SettingsFactory, SmallLibrary, build_small_library
from tests.support.openai_server import FakeOpenAIServer


def _row(key: str, created: str, superseded: bool = False) -> DescriptionRow:
    return DescriptionRow("p", key, f"text of {key}", created, superseded)


def test_tiers_come_from_the_describer_key() -> None:
    assert [tier_of(k) for k in ("sidecar:abc", "qwen-vl-plus@v3", "offline@v1")] == [
        "imported",
        "vision",
        "offline",
    ]


def test_the_best_tier_wins_over_a_newer_worse_one() -> None:
    rows = [_row("sidecar:a", "2026-01-01"), _row("offline@v1", "2026-02-01")]
    assert best_of(rows) == rows[0]
    assert not should_describe(rows, "qwen-vl-plus@v3")  # vision is below imported
    assert not should_describe([_row("offline@v1", "2026-01-01")], "offline@v1")  # same key
    assert should_describe([_row("offline@v1", "2026-01-01")], "qwen-vl-plus@v3")
    # a new prompt version of the same tier describes again, and the newest of a tier wins
    vision = [_row("qwen-vl-plus@v2", "2026-01-01"), _row("qwen-vl-plus@v3", "2026-03-01")]
    assert should_describe(vision[:1], "qwen-vl-plus@v3")
    assert best_of(vision) == vision[1]


def test_a_superseded_description_loses_whatever_its_tier() -> None:
    rows = [_row("sidecar:a", "2026-01-01", superseded=True), _row("offline@v1", "2026-02-01")]
    assert best_of(rows) == rows[1]


def _descriptions(app: PeiTu) -> dict[str, str]:
    best = app.catalog.best_descriptions(app.catalog.photo_ids())
    return {photo_id: d.describer_key for photo_id, d in best.items()}


def _stored_texts(app: PeiTu) -> set[str]:
    found = app.store.query(app.embedder.embed(["照片"])[0].tolist(), 100)
    return {c.description for c in found}


def test_imported_captions_survive_offline_and_vision_runs_until_redescribe(
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    embedder: SentenceTransformerEmbedder,
    fake_vision_settings: VisionSettings,
    openai_server: FakeOpenAIServer,
) -> None:
    settings = make_settings(library=small_library.root, vision=fake_vision_settings.model_dump())
    imported = build_app(settings, descriptions=small_library.descriptions, embedder=embedder)
    assert imported.index().described == 30
    captions = _stored_texts(imported)
    assert imported.status().tiers == {"imported": 30}

    offline = build_app(settings, embedder=embedder, describer="offline")
    report = offline.index()
    assert (report.described, report.embedded) == (0, 0)

    vision = build_app(settings, embedder=embedder, describer="vision")
    report = vision.index()
    assert (report.described, report.embedded, openai_server.calls["vision"]) == (0, 0, 0)
    assert set(_descriptions(vision).values()) == {imported.describer.key}
    assert _stored_texts(vision) == captions

    report = vision.index(redescribe=True)
    assert (report.described, report.embedded, openai_server.calls["vision"]) == (30, 30, 30)
    assert set(_descriptions(vision).values()) == {vision.describer.key}
    assert not _stored_texts(vision) & captions  # the index embeds the vision descriptions
    assert vision.status().tiers == {"vision": 30}
    # the captions file again, without --redescribe: its descriptions exist, nothing changes
    assert imported.index().described == 0
    assert set(_descriptions(imported).values()) == {vision.describer.key}


def test_a_vision_run_replaces_offline_descriptions(
    tmp_path: Path,
    make_settings: SettingsFactory,
    embedder: SentenceTransformerEmbedder,
    fake_vision_settings: VisionSettings,
    openai_server: FakeOpenAIServer,
) -> None:
    library = build_small_library(tmp_path / "few", count=3)
    settings = make_settings(library=library.root, vision=fake_vision_settings.model_dump())
    offline = build_app(settings, embedder=embedder, describer="offline")
    assert offline.index().described == 3
    assert offline.status().tiers == {"offline": 3}
    vision = build_app(settings, embedder=embedder, describer="vision")
    report = vision.index()
    assert (report.described, report.embedded, openai_server.calls["vision"]) == (3, 3, 3)
    assert vision.status().tiers == {"vision": 3}
    assert offline.index().described == 0  # offline never comes back over vision


def test_photos_are_searchable_while_the_first_index_still_describes(
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    embedder: SentenceTransformerEmbedder,
) -> None:
    settings = make_settings(library=small_library.root, vision={"concurrency": 1})
    app = build_app(settings, descriptions=small_library.descriptions, embedder=embedder)
    cancel = threading.Event()
    searchable_at: list[int] = []

    def progress(phase: str, done: int, total: int) -> None:
        if phase == "describe" and done == 20:
            searchable_at.append(app.store.count())  # 16 embedded while describing goes on
            cancel.set()

    report = app.index(progress=progress, cancel=cancel)
    assert report.cancelled and report.described == 20
    assert searchable_at == [16]
    assert report.embedded == app.store.count() == 20  # the cancel embedded the rest
    described = set(app.catalog.best_descriptions(app.catalog.photo_ids()))
    assert app.store.ids() == described
