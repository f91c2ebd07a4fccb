"""`python -m tests.support.swap_crash DATA_DIR LIBRARY DESCRIPTIONS MODEL STEP`: a rebuild that
is killed (SIGKILL, by itself) right after the given step of the collection swap.

The same parts `build_app` composes (catalog, embedded Chroma, m3e, the sidecar describer, the
index lock), with a swap hook injected into the store: the kill lands exactly between two
steps of `ChromaStore.adopt`, a window that is otherwise 10-20 ms wide.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from index.describers.sidecar import SidecarDescriber
from index.indexing.indexer import Indexer, ScanLimits
from index.library.catalog import Catalog
from index.library.lock import IndexLock
from index.search.embed import SentenceTransformerEmbedder
from index.search.retrieval import DocumentEncoder
from index.search.store import ChromaStore, make_chroma_client

COLLECTION = "peitu_photos"


def main(data_dir: Path, library: Path, descriptions: Path, model: str, step: str) -> None:
    def kill_at(done: str) -> None:
        if done == step:
            os.kill(os.getpid(), signal.SIGKILL)

    embedder = SentenceTransformerEmbedder(model)
    encoder = DocumentEncoder("mixture", 0.3)
    store = ChromaStore(
        make_chroma_client("", data_dir),
        COLLECTION,
        embedder.model_name,
        embedder.dimension,
        encoder.identity,
        swap_hook=kill_at,
    )
    catalog = Catalog(data_dir / "catalog.sqlite3")
    limits = ScanLimits(max_file_bytes=200 * 1024 * 1024, max_pixels=120_000_000)
    indexer = Indexer(
        catalog, store, embedder, SidecarDescriber(descriptions), limits, encoder=encoder
    )
    with IndexLock(data_dir / "index.library.lock").hold("swap-crash"):
        indexer.run(library, "rebuild")
    raise SystemExit(f"step {step!r} never came")


if __name__ == "__main__":
    data, lib, sidecar, model_path, at = sys.argv[1:]
    main(Path(data), Path(lib), Path(sidecar), model_path, at)
