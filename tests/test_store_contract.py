"""One contract for the `VectorStore` port, run against every backend (embedded Chroma, a real
`chroma run` server, the local HNSW graph over SQLite and the exact in-memory store) and for
both collections on it (the text vectors and the visual ones). Tests of Chroma's own parts (HNSW
parameters, an unreachable server) come after the contract."""

from __future__ import annotations

import hashlib
import shutil
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from index.errors import IndexMismatch, ModelUnavailable
from index.models import Candidate, QueryFilters
from index.ports import StoredVector, VectorStore
from index.search.embed import SentenceTransformerEmbedder
from index.search.store import HNSW_TUNING, ChromaStore, chroma_where, make_chroma_client
from index.search.store_hnsw import HnswStore
from index.search.store_memory import MemorySpace, MemoryStore
from index.service import PeiTu
from index.understanding.filters import matches, wall_clock_ts
from index.visual.store import visual_identity
from index.wiring import build_app
from tests.support.chroma_server import chroma_server
from tests.support.core_fixtures import SettingsFactory, SmallLibrary
from tests.support.port_app import app_over

StoreFactory = Callable[..., VectorStore]


@pytest.fixture(scope="module")
def chroma_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with chroma_server(tmp_path_factory.mktemp("chroma-server")) as url:
        yield url


@pytest.fixture(params=["text", "visual"])
def collection(request: pytest.FixtureRequest) -> str:
    """Which collection the store holds: the text vectors or the visual ones (the same port,
    opened with `index.visual.store.visual_identity`)."""
    return str(request.param)


REMEDY = {"text": "peitu index --rebuild", "visual": "embed the photos' pixels again"}


@pytest.fixture(params=["embedded", "server", "memory", "hnsw"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path, collection: str) -> StoreFactory:
    """Opens a store on one place per test; each store stands for a process of its own."""
    # The server is shared by the module's tests: one name per test and parameters, in the
    # characters and length Chroma allows.
    name = "contract-" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:16]

    def identity(model: str, dimension: int) -> dict[str, Any] | None:
        return visual_identity(model, dimension) if collection == "visual" else None

    if request.param == "hnsw":

        def make_hnsw(model: str = "m3e-small", dimension: int = 4) -> VectorStore:
            folder = tmp_path / "vectors"
            return HnswStore(
                folder, name, model, dimension, "whole", identity=identity(model, dimension)
            )

        return make_hnsw
    if request.param == "memory":
        space = MemorySpace()

        def make_memory(model: str = "m3e-small", dimension: int = 4) -> VectorStore:
            return MemoryStore(space, name, model, dimension, identity=identity(model, dimension))

        return make_memory
    url = "" if request.param == "embedded" else request.getfixturevalue("chroma_url")

    def make_chroma(model: str = "m3e-small", dimension: int = 4) -> VectorStore:
        client = make_chroma_client(url, tmp_path)
        return ChromaStore(client, name, model, dimension, identity=identity(model, dimension))

    return make_chroma


def _unit(*values: float) -> list[float]:
    vector = np.array(values, dtype=np.float32)
    return (vector / np.linalg.norm(vector)).tolist()


def _items() -> list[StoredVector]:
    return [
        StoredVector("a", _unit(1, 0, 0, 0), "蓝天", {"path": "a.jpg", "taken_at": None}),
        StoredVector("b", _unit(1, 1, 0, 0), "大海", {"path": "b.jpg"}),
        StoredVector("c", _unit(0, 0, 1, 0), "雪地", {"path": "c.jpg"}),
    ]


def test_query_returns_nearest_first_with_cosine_similarity(make_store: StoreFactory) -> None:
    store = make_store()
    store.upsert(_items())
    found = store.query(_unit(1, 0, 0, 0), 2)
    assert [c.photo_id for c in found] == ["a", "b"]
    assert found[0].similarity == pytest.approx(1.0, abs=1e-4)
    assert found[1].similarity == pytest.approx(0.7071, abs=1e-3)
    assert (found[0].path, found[0].description) == ("a.jpg", "蓝天")


def test_get_gives_the_stored_rows_of_known_ids(make_store: StoreFactory) -> None:
    store = make_store()
    assert store.get(["a"]) == []  # nothing stored yet
    store.upsert(_items())
    found = {item.photo_id: item for item in store.get(["c", "a", "unknown"])}
    assert set(found) == {"a", "c"} and found["c"].document == "雪地"
    assert np.allclose(found["a"].vector, _unit(1, 0, 0, 0), atol=1e-6)
    assert found["a"].metadata == {"path": "a.jpg"}  # scalars only, as stored


def test_nearest_gives_the_hits_with_their_stored_rows(make_store: StoreFactory) -> None:
    store = make_store()
    assert store.nearest(_unit(1, 0, 0, 0), 2) == []
    store.upsert(_items())
    found = store.nearest(_unit(1, 0, 0, 0), 2)
    queried = store.query(_unit(1, 0, 0, 0), 2)
    assert [(row.photo_id, cosine) for row, cosine in found] == [
        (c.photo_id, c.similarity) for c in queried
    ]
    nearest, _ = found[0]
    assert nearest.document == "蓝天" and nearest.metadata == {"path": "a.jpg"}
    assert np.allclose(nearest.vector, _unit(1, 0, 0, 0), atol=1e-6)
    store.replace_with(store.begin_rebuild())  # an empty collection, as a visual reset leaves
    assert store.nearest(_unit(1, 0, 0, 0), 2) == []


def test_upsert_replaces_delete_removes_count_and_ids(make_store: StoreFactory) -> None:
    store = make_store()
    store.upsert(_items())
    store.upsert([StoredVector("c", _unit(1, 0, 0, 0), "晴天", {"path": "c2.jpg"})])
    store.delete(["a"])
    assert store.ids() == {"b", "c"} and store.count() == 2
    assert store.query(_unit(1, 0, 0, 0), 1)[0].path == "c2.jpg"


def test_set_metadata_keeps_the_vector(make_store: StoreFactory) -> None:
    store = make_store()
    store.upsert(_items())
    store.set_metadata("c", {"path": "moved/c.jpg"})
    found = store.query(_unit(0, 0, 1, 0), 1)[0]
    assert (found.photo_id, found.path) == ("c", "moved/c.jpg")


def test_query_on_empty_store_is_empty(make_store: StoreFactory) -> None:
    assert make_store().query(_unit(1, 0, 0, 0), 5) == []


def test_other_model_is_refused_until_rebuilt(make_store: StoreFactory, collection: str) -> None:
    make_store().upsert(_items())
    other = make_store("bge-small-zh", 4)
    assert other.mismatch is not None
    reads = (other.count, other.ids, lambda: other.get(["a"]))
    for use in (*reads, lambda: other.query(_unit(1, 0, 0, 0), 1)):
        with pytest.raises(IndexMismatch, match=REMEDY[collection]):
            use()
    with pytest.raises(IndexMismatch):
        other.upsert(_items())  # never mixed in
    other.replace_with(other.begin_rebuild())
    assert other.mismatch is None and other.count() == 0


def test_a_rebuild_fills_a_new_collection_while_the_old_one_answers(
    make_store: StoreFactory,
) -> None:
    make_store().upsert(_items())
    store = make_store("bge-small-zh", 4)  # another model: the old vectors cannot be used
    rebuilt = store.begin_rebuild()
    rebuilt.upsert([StoredVector("c", _unit(0, 0, 1, 0), "雪地", {"path": "c.jpg"})])
    assert make_store().ids() == {"a", "b", "c"}  # the old collection is untouched meanwhile
    store.replace_with(rebuilt)
    assert store.mismatch is None and store.ids() == {"c"}
    assert store.query(_unit(0, 0, 1, 0), 1)[0].path == "c.jpg"
    reopened = make_store("bge-small-zh", 4)  # the new collection has the old one's name
    assert reopened.mismatch is None and reopened.ids() == {"c"}


def test_an_unfinished_rebuild_leaves_the_old_collection(make_store: StoreFactory) -> None:
    store = make_store()
    store.upsert(_items())
    left_over = store.begin_rebuild()
    left_over.upsert(_items()[:1])
    fresh = store.begin_rebuild()  # the next rebuild starts from nothing
    assert fresh.count() == 0
    fresh.upsert(_items()[2:])
    store.discard_rebuild(fresh)
    assert store.ids() == {"a", "b", "c"}
    assert make_store().ids() == {"a", "b", "c"}


def test_another_process_follows_a_rebuild_made_elsewhere(make_store: StoreFactory) -> None:
    """The bot keeps its store open while the server (or `peitu index`) rebuilds the index."""
    reader = make_store()
    reader.upsert(_items())
    writer = make_store()
    rebuilt = writer.begin_rebuild()
    rebuilt.upsert([StoredVector("d", _unit(0, 0, 0, 1), "夜景", {"path": "d.jpg"})])
    writer.replace_with(rebuilt)
    assert [c.photo_id for c in reader.query(_unit(0, 0, 0, 1), 3)] == ["d"]
    assert reader.ids() == {"d"} and reader.count() == 1


def test_a_store_refused_for_its_model_opens_once_rebuilt_elsewhere(
    make_store: StoreFactory,
) -> None:
    make_store().upsert(_items())
    waiting = make_store("bge-small-zh", 4)  # e.g. the bot, configured with the new model
    assert waiting.mismatch is not None
    writer = make_store("bge-small-zh", 4)
    rebuilt = writer.begin_rebuild()
    rebuilt.upsert(_items()[:1])
    writer.replace_with(rebuilt)
    assert waiting.mismatch is None and waiting.ids() == {"a"}


def _placed() -> list[StoredVector]:
    """Four photos at 大理 or 杭州, in 2025 or without a time; `d` is nearest to every query."""
    summer = datetime(2025, 7, 14, 15)
    return [
        StoredVector("d", _unit(1, 0, 0, 0), "洱海", _meta(summer, city="大理市")),
        StoredVector("e", _unit(1, 1, 0, 0), "古城", _meta(None, province="云南省", city="大理市")),
        StoredVector("f", _unit(1, 0, 1, 0), "西湖", _meta(summer, city="杭州市")),
        StoredVector(
            "g", _unit(0, 1, 1, 0), "苍山", _meta(datetime(2024, 7, 1), district="大理市")
        ),
    ]


def _meta(taken: datetime | None, **place: str) -> dict[str, object]:
    keys = {"province": "place_province", "city": "place_city", "district": "place_district"}
    ts = wall_clock_ts(taken) if taken else None
    return {"path": "x.jpg", "taken_ts": ts, **{keys[level]: n for level, n in place.items()}}


FILTERS = [
    None,
    QueryFilters(),
    QueryFilters(place="大理"),
    QueryFilters(place="杭州"),
    QueryFilters(datetime(2025, 6, 1), datetime(2025, 9, 1)),
    QueryFilters(datetime(2025, 6, 1), None),
    QueryFilters(None, datetime(2025, 1, 1)),
    QueryFilters(datetime(2025, 6, 1), datetime(2025, 9, 1), "大理"),
    QueryFilters(datetime(2020, 1, 1), datetime(2021, 1, 1), "大理"),  # nothing then
]


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: "none" if f is None else repr(f))
def test_a_query_keeps_exactly_the_photos_the_filters_match(
    make_store: StoreFactory, filters: QueryFilters | None
) -> None:
    store = make_store()
    items = _placed()
    store.upsert(items)
    found = store.query(_unit(1, 0, 0, 0), 10, filters)
    expected = {i.photo_id for i in items if matches(filters, _stored_metadata(i))}
    assert {c.photo_id for c in found} == expected
    assert [c.similarity for c in found] == sorted((c.similarity for c in found), reverse=True)


def _stored_metadata(item: StoredVector) -> dict[str, object]:
    return {k: v for k, v in item.metadata.items() if v is not None}


def test_metadata_keeps_scalars_and_drops_none(make_store: StoreFactory) -> None:
    store = make_store()
    store.upsert(_items())
    found = store.query(_unit(1, 0, 0, 0), 1)[0]
    assert found.metadata == {"path": "a.jpg"}  # "taken_at": None is not stored
    store.set_metadata("a", {"path": "b/a.jpg", "width": 4, "ratio": 0.5, "kept": True})
    found = store.query(_unit(1, 0, 0, 0), 1)[0]
    assert found.metadata == {"path": "b/a.jpg", "width": 4, "ratio": 0.5, "kept": True}


def test_deleting_unknown_photos_changes_nothing(make_store: StoreFactory) -> None:
    store = make_store()
    store.delete(["nobody"])  # nothing stored yet
    store.upsert(_items())
    store.delete(["nobody", "b"])
    assert store.ids() == {"a", "c"}


def test_a_sample_is_repeatable_and_holds_stored_vectors(make_store: StoreFactory) -> None:
    store = make_store()
    assert store.sample(2) == []
    store.upsert(_items())
    first = store.sample(2, seed=3)
    assert len(first) == 2 and _sorted_rows(first) == _sorted_rows(store.sample(2, seed=3))
    stored = {tuple(np.round(i.vector, 5)) for i in _items()}
    assert {tuple(np.round(v, 5)) for v in first} <= stored
    assert _sorted_rows(store.sample(10)) == sorted(stored)


def _sorted_rows(rows: list[list[float]]) -> list[tuple[float, ...]]:
    return sorted(tuple(np.round(row, 5)) for row in rows)


def test_a_rebuild_is_unseen_until_it_replaces(make_store: StoreFactory) -> None:
    store = make_store()
    store.upsert(_items())
    rebuilt = store.begin_rebuild()
    rebuilt.upsert([StoredVector("z", _unit(0, 0, 0, 1), "夜景", {"path": "z.jpg"})])
    assert "z" not in store.ids() and rebuilt.ids() == {"z"}
    assert [c.photo_id for c in store.query(_unit(0, 0, 0, 1), 1)] != ["z"]
    store.replace_with(rebuilt)
    assert store.ids() == {"z"}


def test_the_indexer_and_the_facade_run_on_the_port_alone(
    make_store: StoreFactory,
    small_library: SmallLibrary,
    embedder: SentenceTransformerEmbedder,
    tmp_path: Path,
) -> None:
    """Index, search, a move (new metadata), a rebuild, a cancelled rebuild, a deletion."""
    store = make_store(embedder.model_name, embedder.dimension)
    root = small_library.root
    app = app_over(store, embedder, root, small_library.descriptions, tmp_path / "data")
    assert app.index().embedded == 30 and store.count() == 30
    target = small_library.photos[5]
    assert target.rel_path in _paths(app, target.captions[4])
    (root / "album").mkdir()
    shutil.move(root / small_library.photos[0].rel_path, root / "album" / "renamed.jpg")
    assert app.index().moved == 1
    assert "album/renamed.jpg" in _paths(app, small_library.photos[0].captions[4])
    assert app.index("rebuild").embedded == 30 and store.count() == 30
    cancel = threading.Event()
    cancel.set()
    assert app.index("rebuild", cancel=cancel).cancelled
    assert store.count() == 30 and target.rel_path in _paths(app, target.captions[4])
    photo_id = app.catalog.files()[target.rel_path]
    app.delete_photo(photo_id)
    assert store.count() == 29 and photo_id not in store.ids()


def _paths(app: PeiTu, text: str) -> list[str]:
    return [r.path for r in app.recommend(text, top_k=5, rerank=False, closest=True).results]


def test_chroma_and_the_memory_store_give_the_same_answers(tmp_path: Path) -> None:
    """300 random photos written in batches, some replaced and deleted: the same hits in the
    same order with the same similarity (Chroma's HNSW is exact at this size)."""
    rng = np.random.default_rng(7)
    chroma = ChromaStore(make_chroma_client("", tmp_path), "same-answers", "m", 16)
    memory = MemoryStore(MemorySpace(), "same-answers", "m", 16)
    cities = ("大理市", "杭州市", "")
    items = [
        StoredVector(
            f"p{n}", rng.normal(size=16).tolist(), f"d{n}", _meta(None, city=cities[n % 3])
        )
        for n in range(300)
    ]
    for store in (chroma, memory):
        for start in range(0, 300, 64):
            store.upsert(items[start : start + 64])
        store.upsert([StoredVector("p1", rng.normal(size=16).tolist(), "new", {"path": "n.jpg"})])
        store.delete([f"p{n}" for n in range(0, 300, 7)])
    for query in rng.normal(size=(5, 16)).tolist():
        for filters in (None, QueryFilters(place="大理")):
            approximate, exact = (store.query(query, 20, filters) for store in (chroma, memory))
            assert _hits(approximate) == _hits(exact) and len(exact) == 20
            similarities = [c.similarity for c in exact]
            assert [c.similarity for c in approximate] == pytest.approx(similarities, abs=1e-5)


def _hits(found: list[Candidate]) -> list[tuple[str, str, str]]:
    return [(c.photo_id, c.path, c.description) for c in found]


def test_ping(make_store: StoreFactory) -> None:
    make_store().ping()


def test_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match=r"127\.0\.0\.1:9"):
        store = ChromaStore(
            make_chroma_client("http://127.0.0.1:9", tmp_path), "x-unreachable", "m", 4
        )
        store.ping()


def test_index_and_recommend_through_a_chroma_server(
    chroma_url: str,
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    embedder: SentenceTransformerEmbedder,
) -> None:
    settings = make_settings(
        library=small_library.root, chroma={"url": chroma_url, "collection": "pipeline-test"}
    )
    app = build_app(settings, descriptions=small_library.descriptions, embedder=embedder)
    assert app.index().embedded == 30
    target = small_library.photos[5]
    assert target.rel_path in [
        r.path for r in app.recommend(target.captions[4], rerank=False).results
    ]
    assert not (settings.data_dir / "chroma").exists()  # nothing went to the embedded store


def test_query_beyond_the_count_gets_all(make_store: StoreFactory) -> None:
    store = make_store()
    store.upsert(_items())
    assert [c.photo_id for c in store.query(_unit(0.1, 0, 1, 0), 50)] == ["c", "a", "b"]
    assert store.query(_unit(0, 0, 1, 0), 0) == []


def test_count_follows_every_write_of_this_store(make_store: StoreFactory) -> None:
    store = make_store()
    assert store.count() == 0
    store.upsert(_items()[:1])
    assert store.count() == 1
    store.upsert(_items())
    assert store.count() == 3
    store.delete(["a", "b"])
    assert store.count() == 1
    store.replace_with(store.begin_rebuild())
    assert store.count() == 0


def test_count_follows_another_writer_after_refresh(make_store: StoreFactory) -> None:
    reader, writer = make_store(), make_store()
    assert reader.count() == 0
    writer.upsert(_items())
    reader.refresh()  # what `PeiTu` does when the catalog says another process wrote
    assert reader.count() == 3


@pytest.mark.parametrize("filters", FILTERS[2:5], ids=["dali", "hangzhou", "summer"])
def test_warm_answers_alike(make_store: StoreFactory, filters: QueryFilters) -> None:
    """`warm` (a server's start-up) may make a store hold a small collection in memory: the
    answers stay the same, and every write (this process's, or another's after `refresh`)
    shows in the next answer."""
    store, writer = make_store(), make_store()
    store.upsert(_placed())
    ask = _unit(1, 0.1, 0, 0)  # no two photos equally near
    cold = [_hits(store.query(ask, 10, query)) for query in (None, filters)]
    store.warm()
    assert [_hits(store.query(ask, 10, query)) for query in (None, filters)] == cold
    query = _unit(1, 0, 0, 0.01)  # d is the nearest of the four; n will be this very vector
    nearest = StoredVector("n", query, "新", _meta(datetime(2025, 7, 1), city="大理市"))
    store.upsert([nearest])
    assert [c.photo_id for c in store.query(query, 2)] == ["n", "d"]
    writer.upsert([StoredVector("w", query, "他处", {"path": "w.jpg"})])
    writer.delete(["n"])
    store.refresh()
    assert [c.photo_id for c in store.query(query, 2)] == ["w", "d"]


def test_every_store_gives_the_exact_answers_on_a_small_library(tmp_path: Path) -> None:
    """300 random photos written in batches, some replaced and deleted: the hnsw store (exact
    below `EXACT_UP_TO`) and a warmed Chroma store (its copy in memory) give the exact store's
    hits in the same order with the same similarity."""
    rng = np.random.default_rng(11)
    memory = MemoryStore(MemorySpace(), "exact", "m", 16)
    chroma = ChromaStore(make_chroma_client("", tmp_path), "exact", "m", 16)
    hnsw = HnswStore(tmp_path / "vectors", "exact", "m", 16, "whole")
    cities = ("大理市", "杭州市", "")
    items = [
        StoredVector(
            f"p{n}", rng.normal(size=16).tolist(), f"d{n}", _meta(None, city=cities[n % 3])
        )
        for n in range(300)
    ]
    stores: list[VectorStore] = [memory, chroma, hnsw]
    for store in stores:
        for start in range(0, 300, 64):
            store.upsert(items[start : start + 64])
        store.delete([f"p{n}" for n in range(0, 300, 7)])
        store.warm()
    reopened = HnswStore(tmp_path / "vectors", "exact", "m", 16, "whole")
    hnsw.flush()  # a saved graph: the next store reads the vectors with it
    saved = HnswStore(tmp_path / "vectors", "exact", "m", 16, "whole")
    for query in rng.normal(size=(5, 16)).tolist():
        for filters in (None, QueryFilters(place="大理")):
            exact = memory.query(query, 20, filters)
            for store in (chroma, hnsw, reopened, saved):
                found = store.query(query, 20, filters)
                assert _hits(found) == _hits(exact) and len(exact) == 20
                similarities = [c.similarity for c in exact]
                assert [c.similarity for c in found] == pytest.approx(similarities, abs=1e-5)


def test_a_warmed_chroma_store_answers_from_memory_until_a_write(tmp_path: Path) -> None:
    store = ChromaStore(make_chroma_client("", tmp_path), "copy", "m3e-small", 4)
    store.upsert(_placed())
    store.warm()
    copy = store._copy.current()
    assert copy is not None and len(copy) == 4
    store.upsert([StoredVector("n", _unit(0, 0, 0, 1), "新", {"path": "n.jpg"})])
    assert store._copy.current() is None  # forgotten: Chroma answers until it is read again
    assert store.query(_unit(0, 0, 0, 1), 1)[0].photo_id == "n"


def test_chroma_where_speaks_the_filters_in_chromas_dialect() -> None:
    both = QueryFilters(datetime(2025, 6, 1), datetime(2025, 9, 1), "大理")
    where = chroma_where(both)
    assert where is not None and len(where["$and"]) == 3
    assert where["$and"][0] == {"taken_ts": {"$gte": wall_clock_ts(datetime(2025, 6, 1))}}
    assert chroma_where(None) is None and chroma_where(QueryFilters()) is None
    assert chroma_where(QueryFilters(place="杭州")) == {
        "$or": [
            {key: {"$in": ["杭州市"]}} for key in ("place_province", "place_city", "place_district")
        ]
    }


def test_new_and_old_collections_get_the_search_parameters(tmp_path: Path) -> None:
    client = make_chroma_client("", tmp_path)
    identity = {"embedding_model": "m3e-small", "dimension": 4, "schema_version": 1}
    older = {"hnsw:space": "cosine", **identity}  # how PeiTu made collections before
    old = client.create_collection("made-by-an-older-peitu", metadata=older)
    assert old.configuration["hnsw"]["ef_search"] == 100  # Chroma's default
    stores = [  # an older collection's vectors are of the whole text ("whole")
        ChromaStore(client, name, "m3e-small", 4, "whole")
        for name in ("made-by-an-older-peitu", "made-now")
    ]
    for store, name in zip(stores, ("made-by-an-older-peitu", "made-now"), strict=True):
        store.upsert(_items())  # a new collection is made by its first write
        hnsw = client.get_collection(name).configuration["hnsw"]
        assert hnsw["ef_search"] == HNSW_TUNING["ef_search"]
        assert hnsw["sync_threshold"] == HNSW_TUNING["sync_threshold"]
        assert hnsw["space"] == "cosine"
        assert store.mismatch is None  # same construction parameters: no rebuild needed
        assert [c.photo_id for c in store.query(_unit(1, 0, 0, 0), 1)] == ["a"]
