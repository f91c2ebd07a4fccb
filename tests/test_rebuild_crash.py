"""A rebuild killed (SIGKILL) at each step of the collection swap leaves a searchable index."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import chromadb
import pytest
from chromadb.config import Settings as ChromaClientSettings

from index.search.embed import SentenceTransformerEmbedder
from index.wiring import build_app
from tests.support.core_fixtures import REPO, SettingsFactory, SmallLibrary
from tests.support.swap_crash import COLLECTION


def _collections(data_dir: Path) -> list[str]:
    client = chromadb.PersistentClient(
        path=str(data_dir / "chroma"), settings=ChromaClientSettings(anonymized_telemetry=False)
    )
    return sorted(c.name for c in client.list_collections())


def _rebuild_killed_at(step: str, data_dir: Path, library: SmallLibrary, m3e_path: Path) -> None:
    """A rebuild in another process, killed (SIGKILL) right after `step` of its swap."""
    paths = (data_dir, library.root, library.descriptions, m3e_path)
    crashed = subprocess.run(
        [sys.executable, "-m", "tests.support.swap_crash", *map(str, paths), step],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert crashed.returncode == -9, crashed.stderr


def test_status_and_recommend_on_a_fresh_data_folder_create_no_collection(
    make_settings: SettingsFactory, embedder: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    app = build_app(make_settings(), embedder=embedder)
    assert app.status().photos == 0
    assert app.recommend("海边的日落", rerank=False).results == []
    app.close()
    assert _collections(tmp_path / "data") == []


@pytest.mark.parametrize("step", ["marked", "retired", "renamed", "dropped"])
def test_a_rebuild_killed_at_each_step_of_the_swap_leaves_a_searchable_index(
    step: str,
    tmp_path: Path,
    m3e_path: Path,
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    embedder: SentenceTransformerEmbedder,
) -> None:
    old = make_settings(library=small_library.root, retrieval={"document_encoding": "whole"})
    build_app(old, descriptions=small_library.descriptions, embedder=embedder).index()
    settings = make_settings(library=small_library.root)  # "mixture": needs the rebuild
    reader = build_app(settings, embedder=embedder)  # a long-lived bot or server
    assert reader.status().problem is not None
    target = small_library.photos[7]
    _rebuild_killed_at(step, settings.data_dir, small_library, m3e_path)
    # The long-lived reader follows: no missing collection, no error from a closed client.
    assert reader.status().photos == 30 and reader.status().problem is None
    found = reader.recommend(target.captions[4], 5, rerank=False).results
    assert target.rel_path in [r.path for r in found]
    # The next command, a read-only one, finds the whole rebuilt index too.
    fresh = build_app(settings, descriptions=small_library.descriptions, embedder=embedder)
    assert (fresh.status().photos, fresh.status().problem) == (30, None)
    assert _collections(settings.data_dir) == [COLLECTION, f"{COLLECTION}_visual"]  # no leftovers
    report = fresh.index()  # and the next run has nothing left to do
    assert (report.described, report.embedded, fresh.status().photos) == (0, 0, 30)
    reader.close()
    fresh.close()


def test_a_rebuild_killed_before_its_swap_is_cleaned_up_at_the_next_start(
    tmp_path: Path,
    m3e_path: Path,
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    embedder: SentenceTransformerEmbedder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Killed with its rebuilt collection full but not yet complete: the old index answers, and
    the next start (a server's, or an index run's) removes the unfinished one, with a log line."""
    old = make_settings(library=small_library.root, retrieval={"document_encoding": "whole"})
    build_app(old, descriptions=small_library.descriptions, embedder=embedder).index()
    settings = make_settings(library=small_library.root)
    _rebuild_killed_at("started", settings.data_dir, small_library, m3e_path)
    assert f"{COLLECTION}__rebuild" in _collections(settings.data_dir)
    app = build_app(old, descriptions=small_library.descriptions, embedder=embedder)
    with caplog.at_level("WARNING", logger="index.search.store"):
        app.clean_up_leftovers()  # what `peitu serve` does as it starts
    assert _collections(settings.data_dir) == [COLLECTION, f"{COLLECTION}_visual"]
    assert f"removing {COLLECTION}__rebuild" in caplog.text
    assert app.status().photos == 30 and app.status().problem is None
    app.close()
