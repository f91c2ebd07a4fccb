"""A `PeiTu` composed by hand over any `VectorStore`: the facade and the indexer need only the
port, so the same pipeline runs on Chroma and on the in-memory store."""

from __future__ import annotations

from pathlib import Path

from index.describers.sidecar import SidecarDescriber
from index.indexing.indexer import ScanLimits
from index.library.catalog import Catalog
from index.library.lock import IndexLock
from index.ports import Embedder, VectorStore
from index.ranking.recommend import RecommendLimits, TimePlace
from index.service import PeiTu
from index.wiring import compose


def app_over(
    store: VectorStore,
    embedder: Embedder,
    library: Path,
    descriptions: Path,
    data_dir: Path,
    time_place: TimePlace = "prefer",
) -> PeiTu:
    data_dir.mkdir(parents=True, exist_ok=True)
    return compose(
        library=library,
        catalog=Catalog(data_dir / "catalog.sqlite3"),
        store=store,
        embedder=embedder,
        describer=SidecarDescriber(descriptions),
        reranker=None,
        limits=RecommendLimits(time_place=time_place),
        scan_limits=ScanLimits(max_file_bytes=200 * 1024 * 1024, max_pixels=120_000_000),
        lock=IndexLock(data_dir / "index.library.lock"),
    )
