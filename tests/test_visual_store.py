"""The visual collection on every vector-store backend: its own behaviour (a pHash beside each
vector, hits with their vectors, a reset on a model change) over the one `VectorStore` port; a
Chroma visual collection of earlier versions read as it is; with `PEITU_STORE__BACKEND=hnsw`
nothing of Chroma imported, made or opened."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from config import Settings
from index.ports import Vectors, VectorStore
from index.search.embed import SentenceTransformerEmbedder
from index.search.store import HNSW_TUNING, ChromaStore, make_chroma_client
from index.search.store_hnsw import HnswStore
from index.search.store_memory import MemorySpace, MemoryStore
from index.service import PeiTu
from index.visual.store import VisualStore, visual_identity
from index.wiring import build_app
from tests.support.chroma_server import chroma_server
from tests.support.core_fixtures import SettingsFactory, SmallLibrary
from tests.test_visual import ColourHistogram

NAME = "peitu_photos_visual"
MODEL = "rgb-histogram-64@v1"
VisualFactory = Callable[..., VisualStore]


@pytest.fixture(scope="module")
def chroma_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with chroma_server(tmp_path_factory.mktemp("chroma-server")) as url:
        yield url


@pytest.fixture(params=["embedded", "server", "memory", "hnsw"])
def make_visual(request: pytest.FixtureRequest, tmp_path: Path) -> VisualFactory:
    """A visual store on one place per test, as `index.wiring` opens it for each backend."""
    space = MemorySpace()
    url = request.getfixturevalue("chroma_url") if request.param == "server" else ""

    def make(model: str = MODEL, dimension: int = 3) -> VisualStore:
        identity = visual_identity(model, dimension)
        store: VectorStore
        if request.param == "hnsw":
            store = HnswStore(tmp_path / "vectors", NAME, model, dimension, "", identity=identity)
        elif request.param == "memory":
            store = MemoryStore(space, NAME, model, dimension, identity=identity)
        else:
            client = make_chroma_client(url, tmp_path)
            store = ChromaStore(client, NAME, model, dimension, identity=identity)
        return VisualStore(store)

    return make


def _app(settings: Settings, library: SmallLibrary, embedder: SentenceTransformerEmbedder) -> PeiTu:
    return build_app(
        settings,
        descriptions=library.descriptions,
        embedder=embedder,
        visual_embedder=ColourHistogram(),
    )


def _rows(*rows: tuple[float, ...]) -> Vectors:
    vectors = np.asarray(rows, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_hits_come_with_their_vector_and_phash(make_visual: VisualFactory) -> None:
    store = make_visual()
    assert store.query(_rows((1, 0, 0))[0], 5) == [] and store.stored("a") is None
    vectors = _rows((1, 0, 0), (1, 1, 0), (0, 0, 1))
    store.upsert(["a", "b", "c"], vectors, ["aaaa", "bbbb", "cccc"])
    hits = store.query(vectors[0], 2)
    assert [h.photo_id for h in hits] == ["a", "b"]
    assert hits[0].similarity == pytest.approx(1.0, abs=1e-5) and hits[0].phash == "aaaa"
    assert np.allclose(hits[1].vector, vectors[1], atol=1e-6)
    stored = store.stored("c")
    assert stored is not None and np.allclose(stored[0], vectors[2]) and stored[1] == "cccc"
    store.delete(["b"])
    assert store.ids() == {"a", "c"} and store.count() == 2


def test_another_visual_model_is_refused_until_reset(make_visual: VisualFactory) -> None:
    make_visual().upsert(["a"], _rows((1, 0, 0)), ["aaaa"])
    other = make_visual("efficientnet-lite0/avgpool@v1", 3)
    assert other.mismatch is not None
    assert "visual index was built with 'rgb-histogram-64@v1'" in str(other.mismatch)
    other.reset()
    assert other.mismatch is None and other.count() == 0
    other.upsert(["b"], _rows((0, 1, 0)), ["bbbb"])
    assert make_visual("efficientnet-lite0/avgpool@v1", 3).ids() == {"b"}
    assert make_visual().mismatch is not None  # the old model's store sees the new vectors


def test_a_chroma_visual_collection_of_earlier_versions_is_read_as_it_is(tmp_path: Path) -> None:
    """Written as the Chroma-only visual store wrote it: no migration, no vector lost."""
    vectors = _rows((1, 0, 0), (0, 1, 0))
    old = make_chroma_client("", tmp_path)  # the raw Chroma client, as the old store used it
    collection = old.create_collection(
        NAME,
        metadata={"hnsw:space": "cosine", **visual_identity(MODEL, 3)},
        embedding_function=None,
    )
    collection.upsert(
        ids=["a", "b"],
        embeddings=[row.tolist() for row in vectors],
        metadatas=[{"phash": "aaaa"}, {"phash": "bbbb"}],
    )
    identity = visual_identity(MODEL, 3)
    client = make_chroma_client("", tmp_path)
    store = VisualStore(ChromaStore(client, NAME, MODEL, 3, identity=identity))
    assert store.mismatch is None and store.count() == 2
    hits = store.query(vectors[1], 1)
    assert hits[0].photo_id == "b" and hits[0].phash == "bbbb"
    assert hits[0].similarity == pytest.approx(1.0, abs=1e-5)


def test_an_hnsw_user_gets_the_visual_vectors_of_a_former_chroma_collection_again(
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    embedder: SentenceTransformerEmbedder,
    tmp_path: Path,
) -> None:
    """The visual phase embeds the pixels again into the HNSW store; Chroma's folder is left
    as it was (never opened), so going back to Chroma finds its collection whole."""
    settings = make_settings(library=small_library.root, visual={"batch_size": 8})
    before = _app(settings, small_library, embedder)
    assert before.index().visual_embedded == 30
    before.close()
    chroma = tmp_path / "data" / "chroma"
    files = {p: p.stat().st_mtime_ns for p in chroma.rglob("*") if p.is_file()}
    hnsw = settings.model_copy(
        update={"store": settings.store.model_copy(update={"backend": "hnsw"})}
    )
    after = _app(hnsw, small_library, embedder)
    report = after.index()
    assert report.visual_embedded == 30 and after.visual is not None
    assert after.visual.store.count() == 30
    similar = after.similar_to_photo(sorted(after.visual.store.ids())[2])
    assert similar is not None and similar.results
    assert {p: p.stat().st_mtime_ns for p in chroma.rglob("*") if p.is_file()} == files


def test_the_visual_chroma_collection_keeps_chromas_own_search_parameters(
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    embedder: SentenceTransformerEmbedder,
    tmp_path: Path,
) -> None:
    """As the Chroma-only visual store made it (ef_search 100); the text one is tuned."""
    settings = make_settings(library=small_library.root, visual={"batch_size": 8})
    app = _app(settings, small_library, embedder)
    app.index()
    client = make_chroma_client("", tmp_path / "data")
    text = client.get_collection(settings.chroma.collection).configuration["hnsw"]
    visual = client.get_collection(settings.chroma.collection + "_visual").configuration["hnsw"]
    assert text["ef_search"] == HNSW_TUNING["ef_search"] and visual["ef_search"] == 100
    app.close()


_SCRIPT = """
import json, sys
from pathlib import Path
from config import load_settings
from index.wiring import build_app
from tests.support.core_fixtures import build_small_library
from tests.test_visual import ColourHistogram

root, model = Path(sys.argv[1]), sys.argv[2]
library = build_small_library(root / "lib")
settings = load_settings(
    data_dir=root / "data", library=library.root, embedding={"model": model},
    rerank={"enabled": False}, store={"backend": "hnsw"},
)
app = build_app(settings, descriptions=library.descriptions, visual_embedder=ColourHistogram())
report = app.index()
found = app.recommend("海边")
similar = app.similar_to_photo(sorted(app.visual.store.ids())[3])
app.close()
print(json.dumps({
    "visual": report.visual_embedded, "found": len(found.results),
    "similar": len(similar.results), "chromadb": "chromadb" in sys.modules,
}))
"""


def test_with_hnsw_nothing_of_chroma_is_imported_or_made(tmp_path: Path, m3e_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PEITU_", "DASHSCOPE_"))}
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path), str(m3e_path)],
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    ran = json.loads(proc.stdout.strip().splitlines()[-1])
    assert ran["visual"] == 30 and ran["found"] > 0 and ran["similar"] > 0
    assert ran["chromadb"] is False
    made = [p.name for p in (tmp_path / "data").rglob("*")]
    assert not [name for name in made if "chroma" in name.lower()], made
