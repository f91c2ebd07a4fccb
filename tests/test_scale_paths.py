"""The request path does work in proportion to the hits, not the library: point queries in the
catalog, facts remembered until the catalog changes, each text embedded once."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from index.library.catalog import Catalog
from index.models import IndexReport, PhotoFile
from index.ports import Vectors
from index.search.embed import SentenceTransformerEmbedder
from index.search.retrieval import DenseRetriever, encode_documents, piece_centroids
from index.search.store import ChromaStore, make_chroma_client
from index.search.store_memory import MemorySpace, MemoryStore
from tests.support.core_fixtures import SmallLibrary
from tests.support.port_app import app_over


class CountingEmbedder:
    """The real m3e-small, recording every text it is asked to embed."""

    def __init__(self, inner: SentenceTransformerEmbedder) -> None:
        self._inner = inner
        self.texts: list[str] = []

    @property
    def model_name(self) -> str:
        return self._inner.model_name

    @property
    def dimension(self) -> int:
        return self._inner.dimension

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.texts.extend(texts)
        return self._inner.embed(texts)


def _photo(name: str, photo_id: str) -> PhotoFile:
    return PhotoFile(photo_id, Path(name), name, 10, 1.0, 4, 3)


def test_point_queries_answer_like_the_whole_table_reads(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "catalog.sqlite3")
    catalog.save_description("p1", "offline", "旧的描述")
    catalog.save_description("p1", "vision", "新的描述")
    catalog.save_description("p2", "vision", "另一张")
    catalog.mark_embedded([("p1", "新的描述", "a.jpg")], "m3e-small")
    for photo_id in ("p1", "p2", "p3"):
        assert catalog.latest_description(photo_id) == catalog.latest_descriptions([photo_id]).get(
            photo_id
        )
        assert catalog.is_embedded(photo_id) == (photo_id in catalog.embedded())
    latest = catalog.latest_description("p1")
    assert latest is not None and latest.description == "新的描述"


def test_remembered_counts_follow_this_and_other_connections(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite3"
    server, indexer = Catalog(path), Catalog(path)
    assert server.photo_count() == 0 and server.last_finished_run() is None
    server.replace_files([_photo("a.jpg", "p1")])
    assert server.photo_count() == 1  # our own write
    indexer.replace_files([_photo("a.jpg", "p1"), _photo("b.jpg", "p2"), _photo("c.jpg", "p2")])
    run = indexer.start_run("incremental")
    indexer.finish_run(run, IndexReport())
    assert server.photo_count() == 2  # another process's write
    assert server.last_finished_run() is not None
    indexer.remove_file("a.jpg")
    assert server.photo_count() == 1


def test_mixture_encoding_embeds_each_distinct_text_once(
    embedder: SentenceTransformerEmbedder,
) -> None:
    counting = CountingEmbedder(embedder)
    descriptions = ["海边的男孩。", "海边的男孩。主体：沙滩", "雪地里的狗"]
    vectors = encode_documents(counting, descriptions, "mixture", 0.3)
    assert sorted(counting.texts) == sorted(set(counting.texts))  # nothing twice
    assert set(counting.texts) == {"海边的男孩", "沙滩", "雪地里的狗", *descriptions}
    whole = embedder.embed(descriptions)
    expected = 0.7 * piece_centroids(embedder, descriptions) + 0.3 * whole
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.allclose(vectors, expected, atol=1e-4)


def test_a_text_searched_again_at_once_is_embedded_once(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    counting = CountingEmbedder(embedder)
    store = ChromaStore(make_chroma_client("", tmp_path), "scale-paths", "m3e-small", 512)
    retriever = DenseRetriever(counting, store)
    timings: dict[str, float] = {}
    for _ in range(3):  # as the filter relaxations do
        retriever.search("海边的男孩", 5, None, timings)
    retriever.search("雪地里的狗", 5, None, timings)
    assert counting.texts == ["海边的男孩", "雪地里的狗"]


def test_a_query_embeds_its_text_once_through_every_relaxation_and_the_calibration(
    tmp_path: Path, embedder: SentenceTransformerEmbedder, small_library: SmallLibrary
) -> None:
    """Strict time and place with no photo of that time or place: four searches (both, place,
    time, none) and the calibration, all with the vector of one embedding of the text."""
    counting = CountingEmbedder(embedder)
    store = MemoryStore(MemorySpace(), "photos", embedder.model_name, embedder.dimension)
    app = app_over(
        store, counting, small_library.root, small_library.descriptions, tmp_path, "strict"
    )
    app.index()
    counting.texts.clear()
    result = app.recommend("去年夏天在大理，海边玩耍的孩子", rerank=False, closest=True)
    assert result.message is not None and "已忽略时间和地点条件" in result.message
    assert counting.texts.count("海边玩耍的孩子") == 1
    assert len(counting.texts) == len(set(counting.texts))  # the background's texts once too
