"""The PeiTu facade and its composition from `Settings`.

Each process (CLI, bot, server) calls `build_app` once and passes the result in; nothing deeper
reads settings or environment variables.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from config import Settings
from config.settings import DASHSCOPE_BASE_URL
from index.calibration import Calibrator, MatchParams, SampleSource, background_texts
from index.catalog import Catalog
from index.dedup import collapse_near_duplicates
from index.describe_sidecar import SidecarDescriber
from index.descriptions import TIERS
from index.embed import SentenceTransformerEmbedder
from index.errors import IndexBusy, IndexMismatch, LibraryNotFound
from index.indexer import Indexer, IndexMode, ScanLimits
from index.keyword import KeywordIndex
from index.lock import IndexLock
from index.models import IndexReport, ProgressCallback, RecommendResult
from index.ports import Describer, Embedder, Reranker
from index.query import RuleBasedUnderstanding
from index.recommend import Recommender, RecommendLimits, TimePlace
from index.retrieval import (
    DocumentEncoder,
    FusionParams,
    QueryVectors,
    RetrievalConfig,
    make_retriever,
    query_preparation,
)
from index.store import ChromaStore, make_chroma_client

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexStatus:
    photos: int  # photos with a vector, i.e. findable
    files: int  # distinct photos seen in the library
    last_index_at: datetime | None
    indexing: bool
    problem: str | None = None  # e.g. the index was built with another embedding model
    # photos of the library by the tier of the description used ("imported", "vision",
    # "offline"; "none" = not described yet)
    tiers: dict[str, int] = field(default_factory=dict)


class PeiTu:
    """Everything a surface needs: index, recommend, find similar, status."""

    def __init__(
        self,
        *,
        library: Path | None,
        catalog: Catalog,
        store: ChromaStore,
        embedder: Embedder,
        describer: Describer,
        reranker: Reranker | None,
        limits: RecommendLimits,
        scan_limits: ScanLimits,
        lock: IndexLock,
        concurrency: int = 4,
        retrieval: RetrievalConfig | None = None,
        now: Callable[[], datetime] = datetime.now,
        match_params: MatchParams | None = None,
    ) -> None:
        self.library = library
        self.catalog = catalog
        self._catalog_version = catalog.data_version()
        self._version_lock = threading.Lock()
        self.store = store
        self.embedder = embedder
        self.describer = describer
        self.reranker = reranker
        self.lock = lock
        first_stage = retrieval or RetrievalConfig()
        self.keywords = (
            KeywordIndex(lambda: _searchable_descriptions(catalog))
            if first_stage.fusion.weight > 0
            else None
        )
        vectors = QueryVectors(embedder, query_preparation(first_stage))
        retriever = make_retriever(embedder, store, first_stage, self.keywords, vectors)
        match = match_params or MatchParams()
        calibrator = Calibrator(
            vectors,
            SampleSource(store, match.sample_size),
            match,
            fixed=lambda: embedder.embed(background_texts()),
        )
        self.recommender = Recommender(
            retriever,
            reranker,
            limits,
            understanding=RuleBasedUnderstanding(now=now),  # 今天, 去年 are relative to `now`
            collapse=collapse_near_duplicates,
            calibrator=calibrator,
        )
        self.indexer = Indexer(
            catalog, store, embedder, describer, scan_limits, concurrency, first_stage.encoder
        )

    def index(
        self,
        mode: IndexMode = "incremental",
        *,
        library: Path | None = None,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        job_id: str | None = None,
        redescribe: bool = False,
        describer: Describer | None = None,
    ) -> IndexReport:
        """Run one indexing job; raises `IndexBusy` if another is running anywhere.

        `redescribe` describes every photo again (with `describer`, default the app's) and
        makes that description the one used, whatever the tier of the one before."""
        root = library or self.library
        if root is None:
            raise LibraryNotFound(
                "no photo library configured: pass --library or set PEITU_LIBRARY"
            )
        with self.lock.hold(job_id or uuid.uuid4().hex[:12]):
            report = self.indexer.run(
                root.expanduser().resolve(),
                mode,
                progress,
                cancel,
                redescribe=redescribe,
                describer=describer,
            )
        if self.keywords is not None:
            self.keywords.refresh()
        return report

    def recommend(
        self,
        text: str,
        top_k: int | None = None,
        *,
        rerank: bool = True,
        time_place: TimePlace | None = None,
        closest: bool = False,
    ) -> RecommendResult:
        """Best photos for `text`. Raises `IndexBusy` when the index cannot answer yet because
        a job is building it (empty, or built with another model and being rebuilt), so the
        person hears "try again soon" rather than "index your photos" or "rebuild".

        `time_place` overrides how time/place words are used (prefer, strict, off); `closest`
        returns the closest photos even when none fits the text."""
        self._follow_other_processes()
        try:
            result = self.recommender.recommend(
                text, top_k, rerank=rerank, time_place=time_place, closest=closest
            )
        except IndexMismatch:
            self._refuse_while_indexing()
            raise
        if not result.results and self.store.count() == 0:
            self._refuse_while_indexing()
        return result

    def _refuse_while_indexing(self) -> None:
        """Raise `IndexBusy` when an indexing job holds the lock now."""
        if self.lock.busy():
            raise IndexBusy(self.lock.holder())

    def similar_to_image(self, data: bytes, top_k: int | None = None) -> RecommendResult:
        """Photos like the given image: describe it, then search by that description."""
        description = self.describer.describe_bytes(data)
        self._follow_other_processes()
        same_photo = hashlib.sha256(data).hexdigest()
        result = self.recommender.recommend(
            description,
            top_k,
            rerank=False,
            exclude=[same_photo],
            understand=False,
            closest=True,  # photos like this one: the closest are the answer
        )
        return result

    def status(self) -> IndexStatus:
        self._follow_other_processes()
        mismatch = self.store.mismatch
        return IndexStatus(
            photos=0 if mismatch else self.store.count(),
            files=self.catalog.photo_count(),
            last_index_at=self.catalog.last_finished_run(),
            indexing=self.lock.busy(),
            problem=str(mismatch) if mismatch else None,
            tiers=self.tier_counts(),
        )

    def tier_counts(self) -> dict[str, int]:
        """Photos of the library by the tier of their description, best tier first."""
        counts = self.catalog.tier_counts(self.catalog.photo_ids())
        ordered = {tier: counts[tier] for tier in TIERS if counts.get(tier)}
        return ordered | ({"none": counts[None]} if counts.get(None) else {})

    def _follow_other_processes(self) -> None:
        """Read the index again when another process (the server, the bot, `peitu index`)
        changed the catalog since we last looked: its new vectors are not in our copy."""
        with self._version_lock:
            version = self.catalog.data_version()
            if version == self._catalog_version:
                return
            self._catalog_version = version
        log.info("the index was changed by another process; reading it again")
        self.store.reload()
        if self.keywords is not None:
            self.keywords.refresh()

    def photo_path(self, photo_id: str) -> Path | None:
        """Absolute path of a file holding the photo, or None when it is not in the library."""
        photo = self.catalog.photo(photo_id)
        if photo is None or self.library is None:
            return None
        return self.library.expanduser().resolve() / photo.rel_path

    def delete_photo(self, photo_id: str, *, delete_files: bool = False) -> list[Path]:
        """Take a photo out of the index for good: later scans skip it even if its file stays.

        With `delete_files` the files holding it are deleted too; returns the paths deleted.
        """
        rel_paths = self.catalog.exclude_photo(photo_id)
        if self.store.mismatch is None:  # a mismatched index is rebuilt without it anyway
            self.store.delete([photo_id])
        if self.keywords is not None:
            self.keywords.refresh()
        if not delete_files or self.library is None:
            return []
        return _delete_files(self.library.expanduser().resolve(), rel_paths)

    def close(self) -> None:
        self.catalog.close()


def _delete_files(root: Path, rel_paths: list[str]) -> list[Path]:
    deleted = []
    for rel_path in rel_paths:
        path = root / rel_path
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as error:  # the photo stays out of the index; the file stays on disk
            log.warning("could not delete %s: %s", path, error)
            continue
        deleted.append(path)
    return deleted


def _searchable_descriptions(catalog: Catalog) -> dict[str, str]:
    """photo_id -> description of every photo with a vector: the keyword index's documents."""
    stored = catalog.best_descriptions(catalog.embedded())
    return {photo_id: d.description for photo_id, d in stored.items()}


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
    if choice == "offline" or (choice == "auto" and _vision_unconfigured(settings)):
        from index.describe_offline import OfflineDescriber

        if choice == "auto":
            log.info(
                "no vision API key (PEITU_VISION__API_KEY / DASHSCOPE_API_KEY): photos are "
                "described offline (OCR, ImageNet tags, EXIF time and place)"
            )
        max_bytes = int(settings.indexing.max_file_mb * 1024 * 1024)
        return OfflineDescriber(max_pixels=settings.indexing.max_pixels, max_bytes=max_bytes)
    from index.describe_vision import VisionDescriber

    return VisionDescriber(settings.vision)


def make_describer(settings: Settings, choice: DescriberChoice = "auto") -> Describer:
    """The vision or offline describer for a job that asks for one (see `_describer`)."""
    return _describer(settings, None, choice)


def _reranker(settings: Settings) -> Reranker | None:
    if not settings.rerank.enabled:
        return None
    from index.rerank import LLMReranker

    return LLMReranker(settings.rerank)


def build_app(
    settings: Settings,
    *,
    descriptions: Path | None = None,
    embedder: Embedder | None = None,
    describer: DescriberChoice = "auto",
    now: Callable[[], datetime] = datetime.now,
) -> PeiTu:
    """Compose the pipeline from settings. `descriptions` selects the captions-file describer,
    `describer` the vision model or the offline one (see `_describer`)."""
    data_dir = settings.data_dir.expanduser()
    data_dir.mkdir(parents=True, exist_ok=True)
    model = embedder or SentenceTransformerEmbedder(
        settings.embedding.model,
        device=settings.embedding.device,
        batch_size=settings.embedding.batch_size,
    )
    url = settings.chroma.url
    retrieval = _retrieval_config(settings)
    store = ChromaStore(
        make_chroma_client(url, data_dir),
        settings.chroma.collection,
        model.model_name,
        model.dimension,
        retrieval.encoder.identity,
        # A Chroma server is shared live; an embedded one must be read again after another
        # process (the server, the bot, `peitu index`) wrote to it.
        reconnect=None if url else (lambda: make_chroma_client("", data_dir)),
    )
    return PeiTu(
        library=settings.library,
        catalog=Catalog(data_dir / "catalog.sqlite3"),
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
            int(settings.indexing.max_file_mb * 1024 * 1024), settings.indexing.max_pixels
        ),
        lock=IndexLock(data_dir / "index.lock"),
        concurrency=settings.vision.concurrency,
        retrieval=retrieval,
        now=now,
    )
