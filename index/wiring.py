"""The composition root: every part of the core built from `Settings`, and the facade over them.

Each process (CLI, bot, server) calls `build_app` once and passes the result in; nothing deeper
reads settings or environment variables. Only this module (and the adapters) import the Chroma
adapter and choose describers, reranker, detector and visual embedder.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from config import Settings, user_cache_dir
from config.settings import DASHSCOPE_BASE_URL, OfflineSettings
from index.describers.detect import Detector
from index.describers.faces import FaceReader
from index.describers.sidecar import SidecarDescriber
from index.errors import ModelUnavailable
from index.indexing.indexer import DESCRIBE_CONCURRENCY, Indexer, ScanLimits
from index.library.catalog import Catalog
from index.library.dedup import collapse_near_duplicates
from index.library.descriptions import known_tier
from index.library.files import LibraryFiles
from index.library.lock import IndexLock
from index.library.space import MB, DiskSpace, opened_on_full_disk
from index.models import Note
from index.ports import Describer, Embedder, Reranker, Vectors, VectorStore, VisualEmbedder
from index.prebuilt import cached_table
from index.ranking.answer import RERANK_OFF as RERANK_OFF_NOTE
from index.ranking.recommend import Recommender, RecommendLimits
from index.search.calibration import (
    OFFLINE_MATCH,
    Calibrator,
    MatchParams,
    SampleSource,
    background_texts,
)
from index.search.embed import SentenceTransformerEmbedder
from index.search.keyword import KeywordIndex
from index.search.retrieval import (
    QueryVectors,
    RetrievalConfig,
    make_retriever,
    query_preparation,
)
from index.service import PeiTu
from index.understanding.query import RuleBasedUnderstanding
from index.visual.index import VisualIndex, VisualLimits
from index.visual.search import SimilarPhotos
from index.visual.store import SUFFIX as VISUAL_SUFFIX
from index.visual.store import VisualStore, visual_identity

if TYPE_CHECKING:
    from chromadb.api import ClientAPI

log = logging.getLogger(__name__)


DescriberChoice = str  # "auto" or a name from `index.library.descriptions.describer_choices()`
ENCODERS_DIR = "encoders"  # in the user's cache: the embedding model exported for onnxruntime
CACHE_DIR = "cache"  # in the data folder: what is made from the model alone (`fixed_background`)


def encoder_exports(settings: Settings) -> Path:
    """The folder of the embedding model's onnxruntime exports, one for every data folder."""
    configured = settings.embedding.export_dir
    return Path(configured).expanduser() if configured else user_cache_dir() / ENCODERS_DIR


def text_store(
    settings: Settings,
    data_dir: Path,
    model_name: str,
    dimension: int,
    lock: IndexLock,
    reconnect: Callable[[], ClientAPI] | None = None,
) -> VectorStore:
    """The text vectors' store `settings.store.backend` names: Chroma (embedded or a server),
    or the local HNSW graph; for vectors of `model_name` in the configured document encoding."""
    encoding = RetrievalConfig.from_settings(settings.retrieval).encoder.identity
    name = settings.chroma.collection
    return _vector_store(settings, data_dir, name, model_name, dimension, encoding, lock, reconnect)


def _vector_store(
    settings: Settings,
    data_dir: Path,
    name: str,
    model_name: str,
    dimension: int,
    encoding: str,
    lock: IndexLock,
    reconnect: Callable[[], ClientAPI] | None,
    identity: dict[str, Any] | None = None,
) -> VectorStore:
    """One collection of the store `settings.store.backend` names. Chroma is imported only
    when it is the one: with `hnsw` nothing of Chroma is loaded, made or opened."""
    if settings.store.backend == "hnsw":
        from index.search.store_hnsw import HnswParams, HnswStore

        s = settings.store
        ef_search = None if s.ef_search == "auto" else s.ef_search
        params = HnswParams(s.m, s.ef_construction, ef_search)
        folder = data_dir / "vectors"
        return HnswStore(folder, name, model_name, dimension, encoding, params, identity=identity)
    from index.search.store import HNSW_TUNING, ChromaStore, make_chroma_client

    return ChromaStore(
        make_chroma_client(settings.chroma.url, data_dir),
        name,
        model_name,
        dimension,
        encoding,
        reconnect=reconnect,
        identity=identity,
        tuning=HNSW_TUNING if identity is None else {},  # the visual one: as it always was
        # A rebuild swap left half done by a killed process is finished by the next reader,
        # unless an indexing job runs now: that job may be the one swapping.
        may_recover=lambda: not lock.busy(),
    )


def _vision_unconfigured(settings: Settings) -> bool:
    """DashScope (the default endpoint) without an API key cannot describe anything."""
    return settings.vision.api_key is None and settings.vision.base_url == DASHSCOPE_BASE_URL


def _describer(
    settings: Settings, descriptions: Path | None, choice: DescriberChoice = "auto"
) -> Describer:
    """Sidecar file if given; else the describer chosen by name, built by its entry in
    `DESCRIBER_BUILDERS`. "auto": the vision model, or the offline describer when the vision
    model is the default DashScope without an API key."""
    if descriptions is not None:
        return SidecarDescriber(descriptions)
    name = choice
    if choice == "auto":
        name = "offline" if _vision_unconfigured(settings) else "vision"
        if name == "offline":
            log.info(
                "no vision API key (PEITU_VISION__API_KEY / DASHSCOPE_API_KEY): photos are "
                "described offline (OCR, ImageNet tags, EXIF time and place)"
            )
    build = DESCRIBER_BUILDERS.get(name)
    if build is None:
        known = ", ".join(DESCRIBER_BUILDERS)
        raise ModelUnavailable(f"no describer named {name!r} can be built here (known: {known})")
    return build(settings)


def _max_bytes(settings: Settings) -> int:
    return int(settings.indexing.max_file_mb * 1024 * 1024)


def _offline_describer(settings: Settings) -> Describer:
    from index.describers.offline import OfflineDescriber

    detector = _detector(settings.offline)
    return OfflineDescriber(
        max_pixels=settings.indexing.max_pixels,
        max_bytes=_max_bytes(settings),
        detector=detector,
        faces=_face_reader(settings.offline) if detector else None,
    )


def _vision_describer(settings: Settings) -> Describer:
    from index.describers.vision import VisionDescriber

    return VisionDescriber(
        settings.vision, max_pixels=settings.indexing.max_pixels, max_bytes=_max_bytes(settings)
    )


# How each describer registered in `index.library.descriptions` (by name and tier) is built
# from the settings; the sidecar is built from its file (`descriptions`) instead.
DESCRIBER_BUILDERS: dict[str, Callable[[Settings], Describer]] = {
    "vision": _vision_describer,
    "offline": _offline_describer,
}


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


def _face_reader(settings: OfflineSettings) -> FaceReader | None:
    """The offline describer's face reader, or None (turned off, or a model is absent)."""
    models = settings.face_model_paths()
    if models is None:
        return None
    from index.describers.faces import OnnxFaceReader

    if missing := [str(model) for model in models if not model.is_file()]:
        log.warning(
            "no face model at %s (scripts/fetch_detector.sh puts them there): offline "
            "descriptions will say 人 for every person",
            " and ".join(missing),
        )
        return None
    return OnnxFaceReader(*models, min_face_score=settings.min_face_score)


def rerank_unconfigured(settings: Settings) -> bool:
    """Reranking is on but its endpoint is DashScope's (the default) without an API key: it
    is off then, like the vision side, and no text leaves the machine. A local endpoint
    (Ollama, vLLM) needs no key."""
    return settings.rerank.enabled and settings.rerank.key_missing


def _reranker(settings: Settings) -> Reranker | None:
    if not settings.rerank.enabled or rerank_unconfigured(settings):
        return None
    from index.ranking.rerank import LLMReranker

    return LLMReranker(settings.rerank)


def _visual_index(
    settings: Settings,
    catalog: Catalog,
    open_store: Callable[[str, int, dict[str, Any]], VectorStore],
    embedder: VisualEmbedder | None,
) -> VisualIndex | None:
    """The visual collection and its model, unless switched off (`PEITU_VISUAL__BACKEND=off`);
    `open_store(model, dimension, identity)` opens the collection in the configured store."""
    if settings.visual.backend == "off":
        return None
    if embedder is None and settings.visual.embedder:
        embedder = _plugged_visual_embedder(settings.visual.embedder)
    if embedder is None:
        from index.visual.embed import EfficientNetVisualEmbedder

        embedder = EfficientNetVisualEmbedder()  # the offline tagger's network: loaded once
    identity = visual_identity(embedder.identity, embedder.dimension)
    store = open_store(embedder.identity, embedder.dimension, identity)
    limits = VisualLimits(
        int(settings.indexing.max_file_mb * 1024 * 1024),
        settings.indexing.max_pixels,
        settings.visual.batch_size,
    )
    return VisualIndex(catalog, VisualStore(store, _reconnecting(store)), embedder, limits)


def _reconnecting(store: VectorStore) -> Callable[[], AbstractContextManager[None]]:
    """What the visual store does around the text store's `refresh`: an embedded Chroma
    collection closes its client (see `ChromaStore.reconnecting`); other stores nothing."""
    return getattr(store, "reconnecting", nullcontext)


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


def _chroma_reconnect(settings: Settings, data_dir: Path) -> Callable[[], ClientAPI] | None:
    """A Chroma server is shared live; an embedded one must be read again after another
    process (the server, the bot, `peitu index`) wrote to it: with a fresh client."""
    if settings.store.backend != "chroma" or settings.chroma.url:
        return None

    def reconnect() -> ClientAPI:
        from index.search.store import make_chroma_client

        return make_chroma_client("", data_dir)

    return reconnect


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
        runtime=settings.embedding.runtime,
        export_cache=encoder_exports(settings),
    )
    retrieval = RetrievalConfig.from_settings(settings.retrieval)
    lock = IndexLock(data_dir / "index.library.lock")
    reconnect = _chroma_reconnect(settings, data_dir)

    def open_stores() -> tuple[VectorStore, Catalog]:
        store = text_store(settings, data_dir, model.model_name, model.dimension, lock, reconnect)
        return store, Catalog(data_dir / "catalog.sqlite3")

    def open_visual_store(model: str, dimension: int, identity: dict[str, Any]) -> VectorStore:
        collection = settings.chroma.collection + VISUAL_SUFFIX
        return opened_on_full_disk(
            data_dir,
            lambda: _vector_store(
                settings, data_dir, collection, model, dimension, "", lock, reconnect, identity
            ),
        )

    # Opening writes a little (Chroma a row, SQLite its WAL index): on a full disk, the reserve.
    store, catalog = opened_on_full_disk(data_dir, open_stores)
    visual = _visual_index(settings, catalog, open_visual_store, visual_embedder)
    return compose(
        library=settings.library,
        catalog=catalog,
        store=store,
        embedder=model,
        describer=_describer(settings, descriptions, describer),
        reranker=_reranker(settings),
        rerank_note=RERANK_OFF_NOTE if rerank_unconfigured(settings) else None,
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
        cache_dir=data_dir / CACHE_DIR,
        space=DiskSpace(data_dir, int(settings.indexing.min_free_mb * MB)),
    )


def compose(
    *,
    library: Path | None,
    catalog: Catalog,
    store: VectorStore,
    embedder: Embedder,
    describer: Describer,
    reranker: Reranker | None,
    limits: RecommendLimits,
    scan_limits: ScanLimits,
    lock: IndexLock,
    concurrency: int = DESCRIBE_CONCURRENCY,
    retrieval: RetrievalConfig | None = None,
    now: Callable[[], datetime] = datetime.now,
    visual: VisualIndex | None = None,
    match_params: MatchParams | None = None,
    cache_dir: Path | None = None,
    rerank_note: Note | None = None,
    space: DiskSpace | None = None,
) -> PeiTu:
    """The facade over the given adapters, with every inner part built here: the first stage
    (`retrieval`, default `Settings.retrieval`'s defaults), the calibrator, the recommender,
    the indexer and the similar-photo search. `build_app` calls this with parts made from
    settings; tests call it with their own store or embedder. `cache_dir`: where what is made
    from the model alone is kept between processes (the calibration's fixed vectors)."""
    first_stage = retrieval or RetrievalConfig()
    keywords = _keyword_index(catalog, first_stage)
    vectors = QueryVectors(embedder, query_preparation(first_stage))
    files = LibraryFiles(catalog, library, scan_limits.follow_external_links)
    recommender = Recommender(
        make_retriever(embedder, store, first_stage, keywords, vectors),
        reranker,
        limits,
        understanding=RuleBasedUnderstanding(now=now),  # 今天, 去年 are relative to `now`
        collapse=collapse_near_duplicates,
        calibrator=_calibrator(vectors, store, embedder, match_params or MatchParams(), cache_dir),
        rerank_note=rerank_note,
    )
    indexer = Indexer(
        catalog,
        store,
        embedder,
        describer,
        scan_limits,
        concurrency,
        first_stage.encoder,
        visual=visual,
        space=space,
    )
    similar = SimilarPhotos(visual, catalog, files.path, limits.top_k_final) if visual else None
    return PeiTu(
        library=library,
        catalog=catalog,
        store=store,
        embedder=embedder,
        describer=describer,
        lock=lock,
        files=files,
        recommender=recommender,
        indexer=indexer,
        keywords=keywords,
        visual=visual,
        similar=similar,
    )


def _keyword_index(catalog: Catalog, first_stage: RetrievalConfig) -> KeywordIndex | None:
    """BM25 over the searchable descriptions, when the fusion gives it any weight."""
    if first_stage.fusion.weight <= 0:
        return None
    return KeywordIndex(lambda: _searchable_descriptions(catalog))


def _calibrator(
    vectors: QueryVectors,
    store: VectorStore,
    embedder: Embedder,
    match: MatchParams,
    cache_dir: Path | None,
) -> Calibrator:
    """The 匹配度 calibration: the library's sampled vectors plus fixed everyday texts, and
    the offline tier's own rule for photos described offline."""
    return Calibrator(
        vectors,
        SampleSource(store, match.sample_size),
        match,
        fixed=lambda: fixed_background(embedder, cache_dir),
        tier_params={"offline": OFFLINE_MATCH},
        # a description by no known describer is judged by the general rule
        tier_of=lambda candidate: known_tier(str(candidate.metadata.get("describer", ""))) or "",
    )


def fixed_background(embedder: Embedder, cache_dir: Path | None) -> Vectors:
    """The vectors of the calibration's fixed everyday texts, kept in `cache_dir` per model and
    texts: a cold query reads 62 vectors instead of running the model on 62 texts."""
    texts = background_texts()
    if cache_dir is None:
        return embedder.embed(texts)
    key = hashlib.sha256("\n".join([embedder.model_name, *texts]).encode()).hexdigest()[:20]
    rows = cached_table("background", key, lambda: embedder.embed(texts).tolist(), cache_dir)
    return np.asarray(rows, dtype=np.float32)


def _searchable_descriptions(catalog: Catalog) -> dict[str, str]:
    """photo_id -> description of every photo with a vector: the keyword index's documents."""
    stored = catalog.best_descriptions(catalog.embedded())
    return {photo_id: d.description for photo_id, d in stored.items()}
