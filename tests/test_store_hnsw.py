"""The local HNSW store's own parts (the contract suite in tests/test_store_contract.py runs
over it too): a saved graph and the rows written after it, a writer killed mid-job, a damaged
graph file, filtered searches on both paths, and the setting that chooses it."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from config import load_settings
from index.models import QueryFilters
from index.ports import StoredVector
from index.search.embed import SentenceTransformerEmbedder
from index.search.store_hnsw import HnswParams, HnswStore, auto_ef_search
from index.search.store_memory import MemorySpace, MemoryStore
from index.understanding.filters import wall_clock_ts
from index.wiring import build_app
from tests.support.core_fixtures import SettingsFactory, SmallLibrary

REPO = Path(__file__).resolve().parent.parent
DIM = 32
START = datetime(2024, 1, 1)


def _items(count: int, seed: int = 0, first: int = 0) -> list[StoredVector]:
    """`count` photos with random vectors, one a day from 2024-01-01, in three cities."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(count, DIM)).astype(np.float32)
    cities = ("杭州市", "大理市", "成都市")
    return [
        StoredVector(
            f"p{first + i:05d}",
            vectors[i].tolist(),
            f"照片 {first + i}",
            {
                "path": f"{first + i}.jpg",
                "taken_ts": wall_clock_ts(START + timedelta(days=first + i)),
                "place_city": cities[(first + i) % 3],
            },
        )
        for i in range(count)
    ]


def _store(folder: Path, **params: float) -> HnswStore:
    return HnswStore(folder, "photos", "m3e-small", DIM, "whole", HnswParams(**params))


def test_a_saved_graph_catches_up_with_rows_written_after_it(tmp_path: Path) -> None:
    writer = _store(tmp_path)
    writer.upsert(_items(300))
    writer.flush()  # the graph file now holds 300 photos
    other = _store(tmp_path)  # another process adds and deletes after the save
    other.upsert(_items(50, seed=1, first=300))
    other.delete(["p00000", "p00001"])
    reopened = _store(tmp_path)
    assert reopened.count() == 348
    late = _items(50, seed=1, first=300)[7]
    assert reopened.query(late.vector, 1)[0].photo_id == "p00307"
    assert {"p00000", "p00001"}.isdisjoint(reopened.ids())
    assert "p00000" not in [c.photo_id for c in reopened.query(_items(1)[0].vector, 5)]


def test_each_save_leaves_one_whole_graph_and_its_facts(tmp_path: Path) -> None:
    store = _store(tmp_path)
    for first in (0, 100, 200):
        store.upsert(_items(100, seed=first, first=first))
        store.flush()
    saved = sorted(path.name.split(".", 1)[1] for path in tmp_path.glob("*.hnsw"))
    facts = sorted(path.name.split(".", 1)[1] for path in tmp_path.glob("*.json"))
    assert saved == ["3.hnsw"] and facts == ["3.json"]  # the graph as of seq 3, and no other
    assert not list(tmp_path.glob("*.partial"))
    assert _store(tmp_path).count() == 300


def test_a_writer_killed_before_saving_loses_nothing(tmp_path: Path) -> None:
    """The rows are the truth: a process that dies after its writes (no flush, no save of
    the graph) leaves every photo findable by the next one."""
    script = (
        "import os, sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from tests.test_store_hnsw import _items, _store\n"
        "from pathlib import Path\n"
        f"store = _store(Path({str(tmp_path)!r}))\n"
        "for start in range(0, 400, 100):\n"
        "    store.upsert(_items(100, seed=start, first=start))\n"
        "os._exit(9)  # killed: no flush, no clean close\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 9, done.stderr
    assert not list(tmp_path.glob("*.hnsw"))  # never saved
    survivor = _store(tmp_path)
    assert survivor.count() == 400
    probe = _items(100, seed=300, first=300)[42]
    assert survivor.query(probe.vector, 1)[0].photo_id == "p00342"


def test_a_damaged_graph_file_is_rebuilt_from_the_rows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = _store(tmp_path)
    store.upsert(_items(200))
    store.flush()
    (graph_file,) = tmp_path.glob("*.hnsw")
    graph_file.write_bytes(graph_file.read_bytes()[:1000])  # a disk that filled up, say
    with caplog.at_level(logging.WARNING):
        reopened = _store(tmp_path)
        found = reopened.query(_items(200)[17].vector, 1)
    assert found[0].photo_id == "p00017" and reopened.count() == 200
    assert "unreadable" in caplog.text


@pytest.mark.parametrize(
    ("exact_below", "post_filter_share"),
    [(0, 2.0), (0, 0.0), (10_000, 0.05)],
    ids=["graph-among-kept", "wider-search-then-filter", "one-by-one"],
)
def test_filtered_queries_find_what_an_exact_search_finds(
    tmp_path: Path, exact_below: int, post_filter_share: float
) -> None:
    """A time or place filter becomes a mask over the photos (kept in memory); the graph then
    searches among the kept photos only, or searches wider and keeps the matching hits, or the
    few kept photos are compared one by one: each the answer of an exact store."""
    items = _items(1500)
    params = HnswParams(exact_below=exact_below, post_filter_share=post_filter_share)
    hnsw = HnswStore(tmp_path, "photos", "m3e-small", DIM, "whole", params)
    exact = MemoryStore(MemorySpace(), "photos", "m3e-small", DIM)
    hnsw.upsert(items)
    exact.upsert(items)
    filters = [
        QueryFilters(START + timedelta(days=100), START + timedelta(days=400)),
        QueryFilters(place="大理"),
        QueryFilters(START + timedelta(days=700), None, "杭州"),
        QueryFilters(START - timedelta(days=30), START),  # nothing then
    ]
    queries = np.random.default_rng(7).normal(size=(10, DIM)).tolist()
    for f in filters:
        for q in queries:
            got = [c.photo_id for c in hnsw.query(q, 10, f)]
            assert got == [c.photo_id for c in exact.query(q, 10, f)]


def test_unfiltered_search_keeps_the_exact_top_20(tmp_path: Path) -> None:
    items = _items(3000, seed=3)
    hnsw = _store(tmp_path)
    exact = MemoryStore(MemorySpace(), "photos", "m3e-small", DIM)
    hnsw.upsert(items)
    exact.upsert(items)
    queries = np.random.default_rng(8).normal(size=(30, DIM)).tolist()
    kept = [
        len({c.photo_id for c in hnsw.query(q, 20)} & {c.photo_id for c in exact.query(q, 20)})
        for q in queries
    ]
    assert sum(kept) / (20 * len(queries)) >= 0.99


def test_the_backend_is_a_setting_and_refuses_a_chroma_server(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, store={"backend": "hnsw"})
    assert settings.store.backend == "hnsw"
    with pytest.raises(ValueError, match="PEITU_CHROMA__URL"):
        load_settings(
            data_dir=tmp_path, store={"backend": "hnsw"}, chroma={"url": "http://127.0.0.1:8001"}
        )


def test_switching_a_library_to_hnsw_embeds_it_again_without_describing(
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    embedder: SentenceTransformerEmbedder,
) -> None:
    chroma = make_settings(library=small_library.root, visual={"backend": "off"})
    first = build_app(chroma, descriptions=small_library.descriptions, embedder=embedder)
    assert first.index().embedded == 30
    first.close()
    hnsw = chroma.model_copy(update={"store": chroma.store.model_copy(update={"backend": "hnsw"})})
    # no descriptions file now: a describe call would fail, so none may happen
    app = build_app(hnsw, embedder=embedder, describer="offline")
    report = app.index()
    assert (report.described, report.embedded) == (0, 30)
    assert (hnsw.data_dir / "vectors" / "vectors.sqlite3").is_file()
    target = small_library.photos[5]
    found = app.recommend(target.captions[4], rerank=False, closest=True).results
    assert target.rel_path in [r.path for r in found]
    assert app.status().photos == 30


def test_the_search_breadth_grows_with_the_library() -> None:
    assert [auto_ef_search(n) for n in (10, 100_000, 240_000, 1_000_000, 10**8)] == [
        600,
        600,
        600,
        2_500,
        5_000,
    ]
    assert HnswParams(ef_search=300).ef_for(1_000_000) == 300  # a set value wins
    assert load_settings(store={"ef_search": "300"}).store.ef_search == 300
    with pytest.raises(ValueError, match="auto"):
        load_settings(store={"ef_search": 7})


def test_graph_saves_a_killed_process_left_half_done_are_removed_at_the_next_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A `.partial` graph file of a process killed mid-save goes (with a log line); one that a
    live process is writing now stays, and so does the saved graph."""
    store = _store(tmp_path)
    store.upsert(_items(100))
    store.flush()
    saved = sorted(p.name for p in tmp_path.glob("*.hnsw"))
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    killed = tmp_path / f"{saved[0].removesuffix('.hnsw')}.{dead.stdout.strip()}.partial"
    killed.write_bytes(b"\0" * 4096)
    two_minutes_ago = killed.stat().st_mtime - 120
    os.utime(killed, (two_minutes_ago, two_minutes_ago))
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as live:
        saving = tmp_path / f"{saved[0].removesuffix('.hnsw')}.{live.pid}.partial"
        saving.write_bytes(b"\0" * 4096)
        with caplog.at_level(logging.WARNING, logger="index.search.store_hnsw"):
            _store(tmp_path).recover()
        live.kill()
    assert not killed.exists() and saving.exists()
    assert f"removing {killed}" in caplog.text
    assert sorted(p.name for p in tmp_path.glob("*.hnsw")) == saved
    assert _store(tmp_path).count() == 100


def test_a_rebuild_killed_before_its_swap_is_removed_at_the_next_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = _store(tmp_path)
    store.upsert(_items(50))
    rebuilt = store.begin_rebuild()
    rebuilt.upsert(_items(20, seed=3))  # killed here: never swapped in
    with caplog.at_level(logging.WARNING, logger="index.search.store_hnsw"):
        _store(tmp_path).recover()
    assert "a rebuild that stopped before it was done" in caplog.text
    names = store._db.execute("SELECT name FROM collections").fetchall()
    assert names == [("photos",)] and _store(tmp_path).count() == 50
