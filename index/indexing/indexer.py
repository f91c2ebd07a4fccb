"""The indexing run: scan → describe what is new → embed what changed → drop what left.

A run can be interrupted at any point (crash, SIGKILL, cancel): descriptions are committed one
by one and vectors batch by batch, so the next run continues where this one stopped. New
descriptions are embedded in small batches while the describing goes on, so what a cancelled or
interrupted run described is already searchable.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Generator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from config.settings import IndexingSettings, VisionSettings
from index.errors import DescribeFailed, DescriberResting, DiskFull, LibraryNotFound, PeiTuError
from index.library.catalog import Catalog, StoredDescription, text_sha
from index.library.dedup import METADATA_KEY as PHASH_KEY
from index.library.dedup import perceptual_hash
from index.library.descriptions import should_describe
from index.library.imaging import PhotoReader, read_photo
from index.library.names import readable_path
from index.library.scan import ScanResult, read_unchanged, scan_library
from index.library.space import MB, DiskSpace
from index.models import IndexReport, PhotoFile, ProgressCallback
from index.ports import (
    Describer,
    Embedder,
    LocalDescriber,
    SeeingDescriber,
    Seen,
    StoredVector,
    VectorStore,
)
from index.search.retrieval import DocumentEncoder
from index.understanding.filters import wall_clock_ts
from index.understanding.geo import place_at
from index.visual.index import VisualIndex

log = logging.getLogger(__name__)

# photos described at once; the one home of the default is `config.settings.VisionSettings`
DESCRIBE_CONCURRENCY: int = VisionSettings.model_fields["concurrency"].default
# free space an indexing run leaves on the data folder's disk; its home is `IndexingSettings`
MIN_FREE_BYTES = int(IndexingSettings.model_fields["min_free_mb"].default * MB)

IndexMode = Literal["incremental", "rebuild"]
_EMBED_BATCH = 256  # descriptions per encoder call and store upsert (pieces repeat within one)
_LIVE_BATCH = 16  # descriptions embedded at once while describing, at least (at most _EMBED_BATCH)
_LIVE_SECONDS = 2.0


@dataclass(frozen=True)
class ScanLimits:
    max_file_bytes: int
    max_pixels: int
    follow_external_links: bool = False  # symlinks may lead outside the library


@dataclass(frozen=True)
class _Describing:
    """Who describes in this run, and whether on purpose again (`--redescribe`)."""

    describer: Describer
    redescribe: bool = False


def _no_progress(phase: str, done: int, total: int) -> None:
    return None


class Indexer:
    """Brings the catalog and the vector store in line with the library folder."""

    def __init__(
        self,
        catalog: Catalog,
        store: VectorStore,
        embedder: Embedder,
        describer: Describer,
        limits: ScanLimits,
        concurrency: int = DESCRIBE_CONCURRENCY,
        encoder: DocumentEncoder | None = None,
        visual: VisualIndex | None = None,
        read: PhotoReader = read_photo,
        space: DiskSpace | None = None,
    ) -> None:
        """`read` is how a photo is decoded for its size, time, place and perceptual hash: once,
        when the scan first reads it (a data folder from before hashes were kept decodes each
        photo once more, the first time its hash is needed). `space` is the data folder's disk,
        checked before each photo is sent to be described (default: the catalog's folder)."""
        self._space = space or DiskSpace(catalog.path.parent, MIN_FREE_BYTES)
        self._visual = visual
        self._read = read
        self._catalog = catalog
        self._store = store
        self._embedder = embedder
        self._describer = describer
        self._limits = limits
        self._concurrency = concurrency
        self._encoder = encoder or DocumentEncoder()

    def run(
        self,
        library: Path,
        mode: IndexMode = "incremental",
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        *,
        redescribe: bool = False,
        describer: Describer | None = None,
    ) -> IndexReport:
        """Index the library. Callers hold the index lock; see `PeiTu.index`.

        An ordinary run describes only photos that no describer of the same or a better tier
        has described (see `index.library.descriptions`); `redescribe` describes every photo again
        with `describer` (default: the indexer's) and makes that description the one used.

        On a disk without room the run stops at once with `DiskFull` (its line names the data
        folder and the space needed); what was described is kept for the next run."""
        if not library.is_dir():
            raise LibraryNotFound(f"photo library not found or not a folder: {library}")
        try:
            self._space.check()  # before anything is written or any photo described
            self._space.keep_reserve()
            return self._run(library, mode, progress, cancel, redescribe, describer)
        except DiskFull as error:
            raise self._space.full() from error

    def _run(
        self,
        library: Path,
        mode: IndexMode,
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
        redescribe: bool,
        describer: Describer | None,
    ) -> IndexReport:
        report_progress = progress or _no_progress
        stop = cancel or threading.Event()
        self._store.recover()  # a rebuild a killed run left half swapped in
        if mode == "incremental":
            if self._store.mismatch is not None:
                raise self._store.mismatch
            self._embed_again_if_store_lost()
        run_id = self._catalog.start_run(mode)
        report = IndexReport()
        # A rebuild fills a new collection while the current one goes on answering queries.
        target = self._store.begin_rebuild() if mode == "rebuild" else self._store
        if mode == "rebuild":
            self._catalog.forget_embedded()
        photos = self._scan(library, report, report_progress)
        self._remove_missing(target, photos, report)
        if not stop.is_set():
            chosen = _Describing(describer or self._describer, redescribe)
            self._describe_missing(chosen, target, photos, report, report_progress, stop)
        if not stop.is_set():
            self._embed_changed(target, photos, report, report_progress, stop)
        self._visual_phase(photos, report, report_progress, stop)
        report.cancelled = stop.is_set()
        if target is not self._store:
            self._finish_rebuild(target, report.cancelled)
        self._store.flush()  # quick to open next time (a store with a saved search graph)
        self._catalog.finish_run(run_id, report)
        return report

    def _embed_again_if_store_lost(self) -> None:
        """An empty store for a catalog that says photos were embedded (its folder deleted, a
        new `PEITU_STORE__BACKEND`): embed them all again, from the stored descriptions."""
        if self._store.count() == 0 and self._catalog.any_embedded():
            log.warning(
                "the vector store holds no photo although photos were embedded before (a new "
                "store backend, or its files removed): embedding them again from their stored "
                "descriptions (nothing is described again)"
            )
            self._catalog.forget_embedded()

    def _finish_rebuild(self, rebuilt: VectorStore, cancelled: bool) -> None:
        """Put the rebuilt store in place; after a cancel keep the old one (the catalog has
        forgotten its vectors, so the next run embeds them again: no vision call)."""
        if cancelled:
            self._store.discard_rebuild(rebuilt)
            self._catalog.forget_embedded()
            return
        self._store.replace_with(rebuilt)

    def _visual_phase(
        self,
        photos: dict[str, PhotoFile],
        report: IndexReport,
        progress: ProgressCallback,
        stop: threading.Event,
    ) -> None:
        """Pixels into the visual collection (similar-photo search); its own identity and
        catalog record, so a text rebuild leaves it alone and a visual model change only it."""
        if self._visual is not None and not stop.is_set():
            self._visual.sync(photos, report, progress, stop)

    # --- scan --------------------------------------------------------------------------------
    def _scan(
        self, library: Path, report: IndexReport, progress: ProgressCallback
    ) -> dict[str, PhotoFile]:
        before = self._catalog.files()
        result = scan_library(
            library,
            max_file_bytes=self._limits.max_file_bytes,
            max_pixels=self._limits.max_pixels,
            known=self._catalog.known_file,
            progress=lambda done, total: progress("scan", done, total),
            follow_external_links=self._limits.follow_external_links,
            read=self._read,
        )
        self._drop_excluded(result)
        self._count_changes(before, result, report)
        self._catalog.replace_files(result.photos)
        kept = {p.photo_id for p in result.photos}
        self._catalog.save_perceptual_hashes(
            {photo_id: h for photo_id, h in result.hashes.items() if photo_id in kept}
        )
        return {p.photo_id: p for p in sorted(result.photos, key=lambda p: p.rel_path)}

    def _drop_excluded(self, result: ScanResult) -> None:
        """Photos a user deleted from the index stay out, even while their files remain."""
        excluded = self._catalog.excluded_ids()
        kept = [p for p in result.photos if p.photo_id not in excluded]
        if len(kept) < len(result.photos):
            result.skipped["excluded"] = len(result.photos) - len(kept)
            result.photos = kept

    @staticmethod
    def _count_changes(before: dict[str, str], result: ScanResult, report: IndexReport) -> None:
        old_ids = set(before.values())
        seen: set[str] = set()
        for photo in result.photos:
            report.scanned += 1
            if before.get(photo.rel_path) == photo.photo_id:
                report.unchanged += 1
            elif photo.photo_id in old_ids and photo.photo_id not in seen:
                report.moved += 1
            elif photo.photo_id not in old_ids and photo.photo_id not in seen:
                report.new += 1
            else:
                report.unchanged += 1  # a second copy of a photo counted above
            seen.add(photo.photo_id)
        report.removed = len(old_ids - seen)
        report.skipped = dict(Counter(result.skipped))
        report.dates_ignored = result.dates_ignored

    def _remove_missing(
        self, store: VectorStore, photos: dict[str, PhotoFile], report: IndexReport
    ) -> None:
        stale = sorted(set(self._catalog.embedded()) - set(photos))
        stale += sorted(store.ids() - set(photos) - set(stale))
        if stale:
            store.delete(stale)
            self._catalog.forget_embedded(stale)
            log.info("removed %d photos that left the library", len(stale))

    # --- describe ----------------------------------------------------------------------------
    def _describe_missing(
        self,
        describing: _Describing,
        store: VectorStore,
        photos: dict[str, PhotoFile],
        report: IndexReport,
        progress: ProgressCallback,
        stop: threading.Event,
    ) -> None:
        """Describe what needs it; new descriptions are embedded in batches while describing
        (`_LiveBatches`), so photos become searchable while the run goes on and a cancel or
        Ctrl-C keeps them."""
        todo = self._to_describe(describing, photos)
        progress("describe", 0, len(todo))
        fresh: list[str] = []
        batches = _LiveBatches()
        resting = _RestingModel()
        if self._visual is not None and todo:
            self._visual.prepare()
        described = self._describe_all(describing, todo, stop, report)
        try:
            for done, (photo, error) in enumerate(described, start=1):
                if error is None:
                    report.described += 1
                    fresh.append(photo.photo_id)
                else:
                    report.failed += 1
                    if not resting.heard(error):  # a resting model is said once, not per photo
                        report.errors.append(readable_path(f"{photo.rel_path}: {error}"))
                        log.warning("could not describe %s: %s", photo.rel_path, error)
                if batches.due(len(fresh)):
                    report.embedded += self._embed_now(store, photos, fresh)
                    batches.embedded()
                    fresh = []
                progress("describe", done, len(todo))
        except DiskFull:
            fresh = []  # no room for vectors: what was described waits in the catalog
            raise
        finally:  # also on KeyboardInterrupt: what was described stays searchable
            described.close()  # on an error, the photos being described are waited for (saved)
            report.embedded += self._embed_now(store, photos, fresh)
            if self._visual is not None:
                self._visual.flush_seen(report)

    def _embed_now(self, store: VectorStore, photos: dict[str, PhotoFile], ids: list[str]) -> int:
        """Embed the best descriptions of these photos (those that changed); how many."""
        if not ids:
            return 0
        todo = self._stale_descriptions(store, {i: photos[i] for i in ids})
        return self._embed_batch(store, todo, photos, self._embedder.model_name)

    def _to_describe(
        self, describing: _Describing, photos: dict[str, PhotoFile]
    ) -> list[PhotoFile]:
        if describing.redescribe:
            return list(photos.values())
        rows = self._catalog.description_rows(photos)
        key = describing.describer.key
        return [p for p in photos.values() if should_describe(rows.get(p.photo_id, []), key)]

    def _describe_all(
        self,
        describing: _Describing,
        todo: list[PhotoFile],
        stop: threading.Event,
        report: IndexReport,
    ) -> Generator[tuple[PhotoFile, PeiTuError | OSError | None]]:
        """Describe with bounded concurrency; yields (photo, error or None) as each finishes.

        Before each photo is sent, the disk must have room for what comes back: when it has
        not (or a description could not be saved), no photo more is sent, those on their way
        are waited for, and `DiskFull` is raised."""
        pending: dict[Future[None], PhotoFile] = {}
        queue = iter(todo)
        full: DiskFull | None = None
        concurrency = self._concurrency
        if isinstance(describing.describer, LocalDescriber):
            concurrency = min(concurrency, describing.describer.parallel)
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            while True:
                while full is None and len(pending) < concurrency and not stop.is_set():
                    photo = next(queue, None)
                    if photo is None:
                        break
                    full = self._no_room()
                    if full is None:
                        job = pool.submit(self._describe_one, describing, photo, report)
                        pending[job] = photo
                if not pending:
                    if full is not None:
                        raise full
                    return
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    photo, error = pending.pop(future), future.exception()
                    if isinstance(error, DiskFull):
                        full = full or error
                        continue
                    yield photo, _error(future)

    def _no_room(self) -> DiskFull | None:
        try:
            self._space.check()
        except DiskFull as full:
            return full
        return None

    def _describe_one(self, describing: _Describing, photo: PhotoFile, report: IndexReport) -> None:
        describer = describing.describer
        seen = _seen(describer, photo, read_unchanged(photo))
        text = seen.text.strip()
        if not text:
            raise DescribeFailed(f"{photo.rel_path}: the describer returned an empty description")
        self._space.save_paid_work(
            lambda: self._catalog.save_description(
                photo.photo_id, describer.key, text, supersede=describing.redescribe
            )
        )
        if self._visual is not None and seen.visual is not None:
            self._visual.add_seen(photo.photo_id, seen.visual, seen.visual_identity, report)

    # --- embed -------------------------------------------------------------------------------
    def _embed_changed(
        self,
        store: VectorStore,
        photos: dict[str, PhotoFile],
        report: IndexReport,
        progress: ProgressCallback,
        stop: threading.Event,
    ) -> None:
        model = self._embedder.model_name
        todo = self._stale_descriptions(store, photos)
        already = report.embedded  # embedded while describing, counted in the phase's progress
        progress("embed", already, already + len(todo))
        for start in range(0, len(todo), _EMBED_BATCH):
            if stop.is_set():
                return
            batch = todo[start : start + _EMBED_BATCH]
            report.embedded += self._embed_batch(store, batch, photos, model)
            progress("embed", already + min(start + _EMBED_BATCH, len(todo)), already + len(todo))

    def _stale_descriptions(
        self, store: VectorStore, photos: dict[str, PhotoFile]
    ) -> list[StoredDescription]:
        """Best descriptions whose vector is missing or out of date; moved photos get their
        new path on the spot."""
        model = self._embedder.model_name
        embedded = self._catalog.embedded()
        todo: list[StoredDescription] = []
        for d in self._catalog.best_descriptions(photos).values():
            record = embedded.get(d.photo_id)
            if record is None or (record.text_sha, record.model) != (
                text_sha(d.description),
                model,
            ):
                todo.append(d)
            elif record.rel_path != photos[d.photo_id].rel_path:
                self._update_path(store, photos[d.photo_id], d)
        return todo

    def _embed_batch(
        self,
        store: VectorStore,
        batch: list[StoredDescription],
        photos: dict[str, PhotoFile],
        model: str,
    ) -> int:
        excluded = self._catalog.excluded_ids()  # a photo deleted while this run went on
        batch = [d for d in batch if d.photo_id not in excluded]
        if not batch:
            return 0
        vectors = self._encoder.encode(self._embedder, [d.description for d in batch])
        hashes = self._perceptual_hashes([photos[d.photo_id] for d in batch])
        items = [
            StoredVector(
                d.photo_id,
                vector.tolist(),
                d.description,
                _metadata(photos[d.photo_id], d, hashes.get(d.photo_id)),
            )
            for d, vector in zip(batch, vectors, strict=True)
        ]
        store.upsert(items)
        triples = [(d.photo_id, d.description, photos[d.photo_id].rel_path) for d in batch]
        self._catalog.mark_embedded(triples, model)
        return len(batch)

    def _update_path(
        self, store: VectorStore, photo: PhotoFile, description: StoredDescription
    ) -> None:
        """A moved photo keeps its vector; only the stored path changes."""
        phash = self._perceptual_hashes([photo]).get(photo.photo_id)
        store.set_metadata(photo.photo_id, _metadata(photo, description, phash))
        self._catalog.move_embedded(photo.photo_id, photo.rel_path)

    def _perceptual_hashes(self, photos: list[PhotoFile]) -> dict[str, str]:
        """The photos' perceptual hashes as the scan kept them; one the catalog lacks (a data
        folder from before it kept them) is computed now, once, and kept."""
        known = self._catalog.perceptual_hashes(p.photo_id for p in photos)
        missing = {p.photo_id: p for p in photos if p.photo_id not in known}
        computed: dict[str, str] = {}
        for photo_id, photo in missing.items():
            digest = perceptual_hash(
                photo.path,
                max_pixels=self._limits.max_pixels,
                max_bytes=self._limits.max_file_bytes,
                read=self._read,
            )
            if digest is not None:
                computed[photo_id] = digest
        if computed:
            self._catalog.save_perceptual_hashes(computed)
        return known | computed


def _metadata(
    photo: PhotoFile, description: StoredDescription, phash: str | None
) -> dict[str, object]:
    place = place_at(photo.gps_lat, photo.gps_lon)
    return {
        "path": readable_path(photo.rel_path),  # the catalog keeps the exact name
        "width": photo.width,
        "height": photo.height,
        "taken_at": photo.taken_at.isoformat() if photo.taken_at else None,
        # EXIF time has no zone: stored as wall-clock time read as UTC (see index.understanding.filters).
        "taken_ts": wall_clock_ts(photo.taken_at) if photo.taken_at else None,
        "gps_lat": photo.gps_lat,
        "gps_lon": photo.gps_lon,
        **(place.metadata() if place else {}),
        PHASH_KEY: phash,
        "describer": description.describer_key,
    }


class _LiveBatches:
    """When to embed what was described: at `_LIVE_BATCH` descriptions when they come slowly
    (a vision model: each batch searchable within seconds), in batches doubling up to
    `_EMBED_BATCH` when they come fast (a descriptions file: the encoder works on big batches)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._size = _LIVE_BATCH
        self._last = clock()

    def due(self, waiting: int) -> bool:
        """Whether to embed the `waiting` descriptions now (then a new batch begins)."""
        if waiting < _LIVE_BATCH:
            return False
        fast = self._clock() - self._last < _LIVE_SECONDS  # since the last batch was embedded
        if waiting < self._size and fast:
            return False
        self._size = min(2 * self._size, _EMBED_BATCH) if fast else _LIVE_BATCH
        return True

    def embedded(self) -> None:
        """A batch was just embedded: the next one's time counts from now."""
        self._last = self._clock()


def _seen(describer: Describer, photo: PhotoFile, data: bytes | None) -> Seen:
    """The description, and the visual vector when the describer's pass gives one."""
    if isinstance(describer, SeeingDescriber):
        return describer.describe_seeing(photo, data)
    return Seen(describer.describe(photo, data))


def _error(future: Future[None]) -> PeiTuError | OSError | None:
    error = future.exception()
    if error is None or isinstance(error, PeiTuError | OSError):
        return error
    raise error  # a bug, not a bad photo: let it surface


class _RestingModel:
    """Whether the describer's model rests (`DescriberResting`): the first such error of a run
    is reported like any other, the others only counted (the next run describes them)."""

    def __init__(self) -> None:
        self._said = False

    def heard(self, error: PeiTuError | OSError) -> bool:
        """True for a resting model's error that was already reported."""
        if not isinstance(error, DescriberResting):
            return False
        said, self._said = self._said, True
        return said
