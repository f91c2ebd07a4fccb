"""The composition root: every part of the core built from `Settings`, and the facade over them.

Each process (CLI, bot, server) calls `build_app` once and passes the result in; nothing deeper
reads settings or environment variables. Only this module (and the adapters) import the Chroma
adapter and choose describers, reranker, detector and visual embedder.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Literal

from chromadb.api import ClientAPI

from config import Settings
from config.settings import DASHSCOPE_BASE_URL, OfflineSettings
from index.describers.detect import Detector
from index.describers.sidecar import SidecarDescriber
from index.errors import (
    ModelUnavailable,
)
from index.library.catalog import Catalog
from index.library.indexer import ScanLimits
from index.library.lock import IndexLock
from index.ports import Describer, Embedder, Reranker, VisualEmbedder
from index.ranking.recommend import RecommendLimits
from index.search.embed import SentenceTransformerEmbedder
from index.search.retrieval import (
    DocumentEncoder,
    FusionParams,
    RetrievalConfig,
)
from index.search.store import ChromaStore, make_chroma_client
from index.service import PeiTu
from index.visual.index import VisualIndex, VisualLimits
from index.visual.store import SUFFIX as VISUAL_SUFFIX
from index.visual.store import VisualStore

log = logging.getLogger(__name__)


def _retrieval_config(settings: Settings) -> RetrievalConfig:
    r = settings.retrieval
    return RetrievalConfig(
        encoder=DocumentEncoder(r.document_encoding, r.whole_weight),
        fusion=FusionParams(r.keyword_weight, r.fusion, r.rrf_k, r.candidate_pool),
        strip_filler=r.strip_filler,
    )


DescriberChoice = Literal["auto", "vision", "offline"]


def _vision_unconfigured(settings: Settings) -> bool:
    """DashScope (the default endpoint) without an API key cannot describe anything."""
    return settings.vision.api_key is None and settings.vision.base_url == DASHSCOPE_BASE_URL


def _describer(
    settings: Settings, descriptions: Path | None, choice: DescriberChoice = "auto"
) -> Describer:
    """Sidecar file if given; else the vision model, or the offline describer when asked for
    ("offline") or when the vision model is the default DashScope without an API key ("auto")."""
    if descriptions is not None:
        return SidecarDescriber(descriptions)
    max_bytes = int(settings.indexing.max_file_mb * 1024 * 1024)
    if choice == "offline" or (choice == "auto" and _vision_unconfigured(settings)):
        from index.describers.offline import OfflineDescriber

        if choice == "auto":
            log.info(
                "no vision API key (PEITU_VISION__API_KEY / DASHSCOPE_API_KEY): photos are "
                "described offline (OCR, ImageNet tags, EXIF time and place)"
            )
        return OfflineDescriber(
            max_pixels=settings.indexing.max_pixels,
            max_bytes=max_bytes,
            detector=_detector(settings.offline),
        )
    from index.describers.vision import VisionDescriber

    return VisionDescriber(
        settings.vision, max_pixels=settings.indexing.max_pixels, max_bytes=max_bytes
    )


def make_describer(settings: Settings, choice: DescriberChoice = "auto") -> Describer:
    """The vision or offline describer for a job that asks for one (see `_describer`)."""
    return _describer(settings, None, choice)


def _detector(settings: OfflineSettings) -> Detector | None:
    """The offline describer's object detector, or None (turned off, or the model is absent)."""
    if not settings.detector_model:
        return None
    from index.describers.detect import OnnxDetector

    model = Path(settings.detector_model).expanduser()
    if not model.is_file():
        log.warning(
            "no object detector at %s (scripts/fetch_detector.sh puts it there): offline "
            "descriptions will not name people or things",
            model,
        )
        return None
    return OnnxDetector(
        model, min_score=settings.min_detection_score, pixel_scale=settings.detector_pixel_scale
    )


def _reranker(settings: Settings) -> Reranker | None:
    if not settings.rerank.enabled:
        return None
    from index.ranking.rerank import LLMReranker

    return LLMReranker(settings.rerank)


def _visual_index(
    settings: Settings,
    catalog: Catalog,
    client: ClientAPI,
    reconnect: Callable[[], ClientAPI] | None,
    embedder: VisualEmbedder | None,
) -> VisualIndex | None:
    """The visual collection and its model, unless switched off (`PEITU_VISUAL__BACKEND=off`)."""
    if settings.visual.backend == "off":
        return None
    if embedder is None and settings.visual.embedder:
        embedder = _plugged_visual_embedder(settings.visual.embedder)
    if embedder is None:
        from index.visual.embed import EfficientNetVisualEmbedder

        embedder = EfficientNetVisualEmbedder()  # the offline tagger's network: loaded once
    store = VisualStore(
        client,
        settings.chroma.collection + VISUAL_SUFFIX,
        embedder.identity,
        embedder.dimension,
        reconnect=reconnect,
    )
    limits = VisualLimits(
        int(settings.indexing.max_file_mb * 1024 * 1024),
        settings.indexing.max_pixels,
        settings.visual.batch_size,
    )
    return VisualIndex(catalog, store, embedder, limits)


def _plugged_visual_embedder(import_path: str) -> VisualEmbedder:
    """`PEITU_VISUAL__EMBEDDER=package.module:factory`: the user's own image model."""
    module_name, _, name = import_path.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as error:
        raise ModelUnavailable(
            f"cannot load the visual embedder {import_path} (PEITU_VISUAL__EMBEDDER): {error}"
        ) from error
    embedder: VisualEmbedder = factory()
    return embedder


def build_app(
    settings: Settings,
    *,
    descriptions: Path | None = None,
    embedder: Embedder | None = None,
    describer: DescriberChoice = "auto",
    now: Callable[[], datetime] = datetime.now,
    visual_embedder: VisualEmbedder | None = None,
) -> PeiTu:
    """Compose the pipeline from settings. `descriptions` selects the captions-file describer,
    `describer` the vision model or the offline one (see `_describer`); `visual_embedder`
    replaces the bundled image model (a CLIP encoder, say: see `index.ports.VisualEmbedder`)."""
    data_dir = settings.data_dir.expanduser()
    data_dir.mkdir(parents=True, exist_ok=True)
    model = embedder or SentenceTransformerEmbedder(
        settings.embedding.model,
        device=settings.embedding.device,
        batch_size=settings.embedding.batch_size,
        threads=settings.embedding.threads,
    )
    url = settings.chroma.url
    retrieval = _retrieval_config(settings)
    lock = IndexLock(data_dir / "index.library.lock")
    # A Chroma server is shared live; an embedded one must be read again after another
    # process (the server, the bot, `peitu index`) wrote to it.
    reconnect = None if url else (lambda: make_chroma_client("", data_dir))
    store = ChromaStore(
        make_chroma_client(url, data_dir),
        settings.chroma.collection,
        model.model_name,
        model.dimension,
        retrieval.encoder.identity,
        reconnect=reconnect,
        # A rebuild swap left half done by a killed process is finished by the next reader,
        # unless an indexing job runs now: that job may be the one swapping.
        may_recover=lambda: not lock.busy(),
    )
    catalog = Catalog(data_dir / "catalog.sqlite3")
    visual_client = make_chroma_client(url, data_dir)
    visual = _visual_index(settings, catalog, visual_client, reconnect, visual_embedder)
    return PeiTu(
        library=settings.library,
        catalog=catalog,
        store=store,
        embedder=model,
        describer=_describer(settings, descriptions, describer),
        reranker=_reranker(settings),
        limits=RecommendLimits(
            settings.top_k_initial,
            settings.similarity_threshold,
            settings.top_k_final,
            settings.time_place,
        ),
        scan_limits=ScanLimits(
            int(settings.indexing.max_file_mb * 1024 * 1024),
            settings.indexing.max_pixels,
            settings.indexing.follow_external_links,
        ),
        lock=lock,
        concurrency=settings.vision.concurrency,
        retrieval=retrieval,
        now=now,
        visual=visual,
    )
