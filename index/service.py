"""The PeiTu facade: what every surface (CLI, bot, server) asks of the core.

It receives its parts built (`index.wiring.build_app` is the one place that builds them from
`Settings`); nothing here reads settings or environment variables.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from index.errors import (
    DescribeFailed,
    IndexBusy,
    IndexMismatch,
    LibraryNotFound,
    PeiTuError,
)
from index.indexing.indexer import Indexer, IndexMode
from index.library.catalog import Catalog
from index.library.descriptions import TIERS
from index.library.files import LibraryFiles, delete_inside
from index.library.lock import IndexLock
from index.library.pairing import BotAccess
from index.library.uploads import UPLOADS_FOLDER, save_new_file
from index.models import IndexReport, Note, NoteKind, ProgressCallback, RecommendResult
from index.ports import Describer, Embedder, VectorStore
from index.ranking.recommend import Recommender, TimePlace
from index.records import AcceptedUpload, IndexReadiness, PhotoDetails, RunningJob
from index.search import segmenter
from index.search.keyword import KeywordIndex
from index.visual.index import VisualIndex
from index.visual.search import SimilarPhotos

log = logging.getLogger(__name__)

IMAGE_QUERIES_AT_ONCE = 2


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
        store: VectorStore,
        embedder: Embedder,
        describer: Describer,
        lock: IndexLock,
        files: LibraryFiles,
        recommender: Recommender,
        indexer: Indexer,
        keywords: KeywordIndex | None = None,
        visual: VisualIndex | None = None,
        similar: SimilarPhotos | None = None,
        bot_access: BotAccess | None = None,
    ) -> None:
        """Built parts only (`index.wiring.compose` builds them): the facade decides nothing
        about how its recommender, indexer or searches are made."""
        self.library = library
        self.catalog = catalog
        self._catalog_version = catalog.data_version()
        self._version_lock = threading.Lock()
        self.store = store
        self.embedder = embedder
        self.describer = describer
        self.lock = lock
        self.files = files
        self.recommender = recommender
        self.indexer = indexer
        self.keywords = keywords
        self.visual = visual
        self.similar = similar
        # Who the chat bot serves besides its allow-list (kept in the data folder).
        self.bot_access = bot_access or BotAccess(catalog.path.parent)
        # Image queries decode in a bounded pool: a burst of them waits instead of decoding at
        # once (each may take up to `QUERY_BUDGET`).
        self._image_queries = threading.BoundedSemaphore(IMAGE_QUERIES_AT_ONCE)

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
        """Photos that look like the given image (visual vectors), or, with the visual index
        switched off, found by a description of it. Raises `PhotoUnreadable`; `IndexBusy`
        while a job fills an empty visual index."""
        if self.similar is None:
            return self.similar_by_description(data, top_k)
        self._follow_other_processes()
        with self._image_queries:
            result = self.similar.for_image(data, top_k)
        self._busy_if_empty(result)
        return result

    def similar_to_photo(self, photo_id: str, top_k: int | None = None) -> RecommendResult | None:
        """Photos that look like one of the library's; None when it is not in the library."""
        path = self.photo_path(photo_id)
        if path is None:
            return None
        if self.similar is None:  # no visual index: search by the photo's own description
            return self._similar_by_stored_description(photo_id, top_k)
        self._follow_other_processes()
        with self._image_queries:
            result = self.similar.for_photo(photo_id, path, top_k)
        self._busy_if_empty(result)
        return result

    def warm_up_visual(self) -> None:
        """Load the image model and run it once (the first run of a batch size is slow)."""
        if self.visual is not None:
            self.visual.embed_one(Image.new("RGB", (256, 256), (128, 128, 128)))

    def _busy_if_empty(self, result: RecommendResult) -> None:
        if not result.results and self.visual is not None and self.visual.store.count() == 0:
            self._refuse_while_indexing()

    def _similar_by_stored_description(self, photo_id: str, top_k: int | None) -> RecommendResult:
        stored = self.catalog.best_descriptions([photo_id]).get(photo_id)
        if stored is None:
            return RecommendResult(
                photo_id, [], {}, (Note(NoteKind.NO_DESCRIPTION, "这张照片还没有描述"),)
            )
        return self._like_description(stored.description, photo_id, top_k)

    def similar_by_description(self, data: bytes, top_k: int | None = None) -> RecommendResult:
        """Photos like the given image the old way: describe it, then search by that text.

        When the describer fails on an image that is itself in the library, the description
        stored for it stands in; otherwise `DescribeFailed` goes up."""
        same_photo = hashlib.sha256(data).hexdigest()
        try:
            with self._image_queries:
                description = self.describer.describe_bytes(data)
        except DescribeFailed:
            stored = self.catalog.best_descriptions([same_photo]).get(same_photo)
            if stored is None:
                raise
            log.warning("the describer failed on an upload; using its stored description")
            description = stored.description
        return self._like_description(description, same_photo, top_k)

    def _like_description(
        self, description: str, photo_id: str, top_k: int | None
    ) -> RecommendResult:
        """The photos whose descriptions are closest to a photo's (that photo left out)."""
        self._follow_other_processes()
        result = self.recommender.recommend(
            description,
            top_k,
            rerank=False,
            exclude=[photo_id],
            understand=False,
            closest=True,  # photos like this one: the closest are the answer
        )
        return look_alikes(result)

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
        counts = self.catalog.library_tier_counts()
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
        if self.visual is None:
            self.store.refresh()
        else:
            with self.visual.store.reconnecting():  # one engine per folder: close both first
                self.store.refresh()
        if self.keywords is not None:
            self.keywords.refresh()

    def photo_path(self, photo_id: str) -> Path | None:
        """Real path of a regular file holding the photo inside the library, or None when it
        is not in the index, gone, or (a link swapped in, a linked folder) really elsewhere."""
        return self.files.path(photo_id)

    def open_photo(self, photo_id: str) -> BinaryIO | None:
        """The photo's file opened for reading, checked at the moment of opening to be a
        regular file really inside the library (see `index.library.files`); None otherwise."""
        return self.files.open(photo_id)

    def delete_photo(self, photo_id: str, *, delete_files: bool = False) -> list[Path]:
        """Take a photo out of the index for good: later scans skip it even if its file stays.

        With `delete_files` the files holding it are deleted too; returns the paths deleted.
        """
        rel_paths = self.catalog.exclude_photo(photo_id)
        if self.store.mismatch is None:  # a mismatched index is rebuilt without it anyway
            self.store.delete([photo_id])
        if self.visual is not None and self.visual.store.mismatch is None:
            self.visual.forget(photo_id)
        if self.keywords is not None:
            self.keywords.refresh()
        if not delete_files or self.library is None:
            return []
        return _delete_files(self.library.expanduser().resolve(), rel_paths)

    def close(self) -> None:
        self.catalog.close()

    # --- what the admin server asks for (`server.ports`): by intent, one photo at a time -----
    def photo_details(self, photo_id: str) -> PhotoDetails | None:
        """The photo's file record, its description and whether it has a vector; None when it
        is not in the index. Three lookups by id, never a whole table: a request's cost stays
        the same at 100 photos and at 100,000."""
        photo = self.catalog.photo(photo_id)
        if photo is None:
            return None
        stored = self.catalog.best_descriptions([photo_id]).get(photo_id)
        return PhotoDetails(photo, stored, self.catalog.is_embedded(photo_id))

    def accept_upload(self, data: bytes, file_name: str) -> AcceptedUpload:
        """Save an uploaded photo as `uploads/<file_name>` in the library (`name-1`, ... when
        the name is taken; never over a file) and let it back into the index if it had been
        deleted from it: uploading a photo again is asking for it. Raises `LibraryNotFound`.
        Indexing it is the caller's next step (a job)."""
        root = self._library_root()
        saved = save_new_file(root / UPLOADS_FOLDER, file_name, data)
        photo_id = hashlib.sha256(data).hexdigest()  # the identity the scan will give it
        readmitted = self.catalog.unexclude_photo(photo_id)
        indexed = not readmitted and self.catalog.is_embedded(photo_id)
        return AcceptedUpload(photo_id, saved.relative_to(root).as_posix(), readmitted, indexed)

    def remove_photo(self, photo_id: str, *, delete_file: bool = False) -> list[str] | None:
        """`delete_photo` for an edge: None when the photo is not in the index, else the files
        deleted (with `delete_file`), as POSIX paths relative to the library."""
        if self.catalog.photo(photo_id) is None:
            return None
        deleted = self.delete_photo(photo_id, delete_files=delete_file)
        if not deleted:
            return []
        root = self._library_root()
        return [path.relative_to(root).as_posix() for path in deleted]

    def readiness(self) -> IndexReadiness:
        """Whether the index answers now: the vector store is pinged (`ModelUnavailable` when
        it does not answer). Counts only the vectors, never the library (a probe's cost)."""
        self.store.ping()
        self._follow_other_processes()
        mismatch = self.store.mismatch
        return IndexReadiness(
            embedding_model=self.embedder.model_name,
            photos=0 if mismatch else self.store.count(),
            indexing=self.lock.busy(),
            problem=str(mismatch) if mismatch else None,
        )

    def running_job(self) -> RunningJob | None:
        """The indexing job running now in any thread or process (CLI, server), or None."""
        if not self.lock.busy():
            return None
        return RunningJob(self.lock.holder())

    def clean_up_leftovers(self) -> None:
        """At start-up: clean up after processes that were killed (a rebuild swap half done or a
        rebuild unfinished, a search graph half saved), each with a log line. Skipped while an
        indexing job runs: the job did this when it started."""
        try:
            with self.lock.hold("start-up"):
                self.store.recover()
        except IndexBusy as busy:
            log.info("an indexing job (%s) runs: leftovers are its to clean", busy.running_job_id)
        except (PeiTuError, OSError) as error:  # the index still answers; the next job tries again
            log.warning("could not clean up after a killed process: %s", error)

    def warm_up(self) -> None:
        """Load what a query needs and run one, so the first request does not wait: the
        embedding model, jieba's whole dictionary, the place names, the store's search graph,
        the calibration's background and the image model. Raises `ModelUnavailable` or
        `OSError` when the embedding or image model fails; a store that cannot answer yet (a
        Chroma server still starting, an index being rebuilt) is only logged."""
        self.embedder.embed([_WARM_UP_TEXT])
        segmenter.load()
        self._warm_up_query()
        self.warm_up_visual()
        log.info("embedding model %s loaded", self.embedder.model_name)

    def _warm_up_query(self) -> None:
        try:  # a time word: the filtered search is warmed too
            self.store.warm()
            self.recommend(_WARM_UP_TEXT, rerank=False, closest=True)
        except PeiTuError as error:
            log.info("the warm-up query did not run through (%s); the first request will", error)

    def _library_root(self) -> Path:
        """The library's real path; `LibraryNotFound` when none is configured or it is gone."""
        if self.library is None:
            raise LibraryNotFound("no photo library configured: set PEITU_LIBRARY")
        root = self.library.expanduser().resolve()
        if not root.is_dir():
            raise LibraryNotFound(f"photo library not found or not a folder: {root}")
        return root


_WARM_UP_TEXT = "今天天气很好"


def look_alikes(result: RecommendResult) -> RecommendResult:
    """A recommendation by a photo's description as a similar-photo answer: its 匹配度 is the
    相似度 (`likeness`), and the reason says how close each photo is, not what it shows (a
    description is data: it may hold text seen in a photo)."""
    shown = [
        dataclasses.replace(r, reason=f"与这张图片画面相近，相似度 {r.match:.0f}", likeness=r.match)
        for r in result.results
    ]
    return dataclasses.replace(result, results=shown)


def _delete_files(root: Path, rel_paths: list[str]) -> list[Path]:
    """Delete the regular files really inside the library; never a link, nothing outside."""
    deleted = []
    for rel_path in rel_paths:
        try:
            real = delete_inside(root, rel_path)
        except OSError as error:  # the photo stays out of the index; the file stays on disk
            log.warning("could not delete %s: %s", root / rel_path, error)
            continue
        if real is None:
            log.warning("not deleted: %s is not a regular file inside the library", rel_path)
            continue
        deleted.append(real)
    return deleted
