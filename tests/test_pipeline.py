"""Index → recommend end to end on real photos, real m3e-small and a real embedded Chroma."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from index.errors import IndexBusy, IndexMismatch, InvalidQuery, LibraryNotFound
from index.models import RERANK_OFF, NoteKind
from index.ports import Vectors
from index.search.embed import SentenceTransformerEmbedder
from index.service import PeiTu
from index.wiring import build_app
from tests.support.core_fixtures import SettingsFactory, SmallLibrary


def _app(
    make_settings: SettingsFactory, lib: SmallLibrary, embedder: SentenceTransformerEmbedder
) -> PeiTu:
    return build_app(
        make_settings(library=lib.root), descriptions=lib.descriptions, embedder=embedder
    )


@pytest.fixture
def indexed_app(
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    embedder: SentenceTransformerEmbedder,
) -> PeiTu:
    """The small library indexed from its sidecar descriptions."""
    app = _app(make_settings, small_library, embedder)
    app.index()
    return app


def test_first_index_describes_and_embeds_every_photo(
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    embedder: SentenceTransformerEmbedder,
) -> None:
    report = _app(make_settings, small_library, embedder).index()
    assert report.to_dict() == {
        "scanned": 30,
        "new": 30,
        "unchanged": 0,
        "moved": 0,
        "removed": 0,
        "described": 30,
        "embedded": 30,
        "failed": 0,
        "visual_embedded": 30,
        "visual_failed": 0,
        "dates_ignored": 0,
        "skipped": {},
    }


def test_second_index_of_unchanged_library_does_nothing(
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    embedder: SentenceTransformerEmbedder,
) -> None:
    _app(make_settings, small_library, embedder).index()
    report = _app(make_settings, small_library, embedder).index()
    assert (report.unchanged, report.new, report.described, report.embedded) == (30, 0, 0, 0)


def test_query_from_another_caption_finds_the_photo_in_top5(
    indexed_app: PeiTu, small_library: SmallLibrary
) -> None:
    app = indexed_app
    hits = 0
    for photo in small_library.photos:
        result = app.recommend(photo.captions[4], rerank=False)
        hits += photo.rel_path in [r.path for r in result.results]
    # Captions 1-4 describe, caption 5 asks; 30 photos, many of dogs and children: most come back.
    assert hits >= 24, f"only {hits}/30 photos found in the top 5 by their fifth caption"


def test_result_fields_and_ranks(indexed_app: PeiTu, small_library: SmallLibrary) -> None:
    app = indexed_app
    result = app.recommend("海边玩耍的孩子", top_k=3, rerank=False)
    assert [r.rank for r in result.results] == [1, 2, 3]
    sims = [r.similarity for r in result.results]
    assert sims == sorted(sims, reverse=True)
    assert all(len(r.reason) <= 40 and r.description for r in result.results)
    assert all(r.reason not in r.description for r in result.results)  # not an excerpt
    assert set(result.timings_ms) == {"embed", "search", "rerank"}
    assert app.photo_path(result.results[0].photo_id) == small_library.root / result.results[0].path


def test_moved_and_removed_photos(indexed_app: PeiTu, small_library: SmallLibrary) -> None:
    app = indexed_app
    first, second = small_library.photos[0].rel_path, small_library.photos[1].rel_path
    (small_library.root / "album").mkdir()
    shutil.move(small_library.root / first, small_library.root / "album" / "renamed.jpg")
    (small_library.root / second).unlink()
    report = app.index()
    assert (report.moved, report.removed, report.described, report.embedded) == (1, 1, 0, 0)
    assert app.store.count() == 29
    moved = app.recommend(small_library.photos[0].captions[4], top_k=5, rerank=False)
    assert "album/renamed.jpg" in [r.path for r in moved.results]


def test_empty_text_is_refused(
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    embedder: SentenceTransformerEmbedder,
) -> None:
    app = _app(make_settings, small_library, embedder)
    with pytest.raises(InvalidQuery):
        app.recommend("   \n ")


def test_nothing_above_threshold_gives_a_message_not_junk(
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    embedder: SentenceTransformerEmbedder,
) -> None:
    settings = make_settings(library=small_library.root, similarity_threshold=0.99)
    app = build_app(settings, descriptions=small_library.descriptions, embedder=embedder)
    app.index()
    result = app.recommend("量子计算机的芯片设计", rerank=False)
    assert result.results == [] and result.nothing_fits
    assert result.message is not None and "最接近的是" in result.message
    assert "相似度" not in result.message  # no raw cosine for a person to misread
    assert [note.kind for note in result.notes] == [NoteKind.NO_MATCH]


def test_a_text_no_photo_fits_gets_no_photos_unless_the_closest_are_asked_for(
    indexed_app: PeiTu, small_library: SmallLibrary
) -> None:
    off = indexed_app.recommend("线性代数作业写不完", rerank=False)
    assert off.results == [] and off.nothing_fits
    assert off.message is not None and "没有适合这段文字的照片" in off.message
    assert [note.kind for note in off.notes] == [NoteKind.NOTHING_FITS]
    closest = indexed_app.recommend("线性代数作业写不完", rerank=False, closest=True)
    assert len(closest.results) == 5 and closest.nothing_fits
    assert all(r.match < 50 for r in closest.results)
    assert [note.kind for note in closest.notes] == [NoteKind.CLOSEST]
    assert closest.rerank == RERANK_OFF  # not asked for
    marked = indexed_app.recommend("? 线性代数作业写不完", rerank=False)
    assert [r.photo_id for r in marked.results] == [r.photo_id for r in closest.results]
    target = small_library.photos[3]
    real = indexed_app.recommend(target.captions[4], rerank=False)
    assert real.results and not real.nothing_fits and real.results[0].match >= 50
    # without an LLM the score is the calibrated match, not a copy of the similarity
    assert all(r.score == round(r.match / 100, 4) for r in real.results)


def test_empty_index_says_so(
    make_settings: SettingsFactory, embedder: SentenceTransformerEmbedder
) -> None:
    app = build_app(make_settings(), embedder=embedder)
    result = app.recommend("今天蓝天白云", rerank=False)
    assert result.results == [] and result.message is not None and "peitu index" in result.message
    assert [note.kind for note in result.notes] == [NoteKind.EMPTY_INDEX]


def test_an_index_being_built_from_nothing_is_busy_not_empty(
    make_settings: SettingsFactory, embedder: SentenceTransformerEmbedder
) -> None:
    app = build_app(make_settings(), embedder=embedder)
    with app.lock.hold("first-run"), pytest.raises(IndexBusy) as raised:
        app.recommend("今天蓝天白云", rerank=False)
    assert raised.value.running_job_id == "first-run"
    app.close()


def test_missing_library_is_a_clear_error(
    make_settings: SettingsFactory, tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    app = build_app(make_settings(library=tmp_path / "nope"), embedder=embedder)
    with pytest.raises(LibraryNotFound, match="nope"):
        app.index()


class _Renamed:
    """The same model under another name: what a user switching models looks like to the index."""

    def __init__(self, inner: SentenceTransformerEmbedder, name: str) -> None:
        self._inner, self._name = inner, name

    @property
    def model_name(self) -> str:
        return self._name

    @property
    def dimension(self) -> int:
        return self._inner.dimension

    def embed(self, texts: Sequence[str]) -> Vectors:
        return self._inner.embed(texts)


def test_other_embedding_model_is_refused_until_rebuild(
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    embedder: SentenceTransformerEmbedder,
) -> None:
    _app(make_settings, small_library, embedder).index()
    settings = make_settings(library=small_library.root)
    other = build_app(
        settings, descriptions=small_library.descriptions, embedder=_Renamed(embedder, "m3e-other")
    )
    with pytest.raises(IndexMismatch, match="peitu index --rebuild"):
        other.recommend("海边", rerank=False)
    with pytest.raises(IndexMismatch):
        other.index()
    with other.lock.hold("rebuilding"), pytest.raises(IndexBusy):  # while a rebuild runs
        other.recommend("海边", rerank=False)
    report = other.index("rebuild")
    assert (report.described, report.embedded) == (0, 30)
    assert other.recommend("海边", rerank=False).results


def test_a_rebuild_keeps_answering_from_the_old_index_until_it_is_done(
    indexed_app: PeiTu, small_library: SmallLibrary
) -> None:
    app = indexed_app
    target = small_library.photos[4]
    during: list[int] = []

    def progress(phase: str, done: int, total: int) -> None:
        if phase == "embed" and done == 0:  # nothing is in the new collection yet
            found = app.recommend(target.captions[4], 30, rerank=False, closest=True).results
            during.append(len(found))

    report = app.index("rebuild", progress=progress)
    assert report.embedded == 30 and during == [30]
    after = app.recommend(target.captions[4], rerank=False, closest=True).results
    assert target.rel_path in [r.path for r in after]
    assert app.store.count() == 30


def test_a_cancelled_rebuild_keeps_the_old_index_and_the_next_run_completes_it(
    indexed_app: PeiTu, small_library: SmallLibrary
) -> None:
    app = indexed_app
    cancel = threading.Event()

    def progress(phase: str, done: int, total: int) -> None:
        if phase == "embed":  # cancelled as embedding starts (one batch holds all 30)
            cancel.set()

    report = app.index("rebuild", progress=progress, cancel=cancel)
    assert report.cancelled and report.embedded == 0
    assert app.store.count() == 30 and app.recommend("海边", rerank=False).results
    follow_up = app.index()
    assert (follow_up.described, follow_up.embedded, app.store.count()) == (0, 30, 30)


def test_a_second_job_is_refused_while_one_runs(
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    embedder: SentenceTransformerEmbedder,
) -> None:
    app = _app(make_settings, small_library, embedder)
    seen: list[str] = []

    def progress(phase: str, done: int, total: int) -> None:
        if phase == "describe" and not seen:
            with pytest.raises(IndexBusy) as busy:
                app.index(job_id="second")
            seen.append(str(busy.value.running_job_id))

    app.index(progress=progress, job_id="first")
    assert seen == ["first"]
    assert not app.status().indexing
