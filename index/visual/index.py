"""The visual phase of an indexing run: every photo's pixels into the visual collection.

Resumable like the text index: the catalog records which photos have a visual vector and with
which model (`visual_embedded`), committed batch by batch, so a stopped run continues. When the
configured model or preprocessing changes, the collection is dropped and filled again; the
descriptions and the text index are not touched, and no vision model is called.

Each photo is decoded once, at reduced scale (`open_image_at_least`), for both its vector and its
perceptual hash (used to group near-duplicates among similar photos).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image

from index.errors import ModelUnavailable, PeiTuError
from index.library.catalog import Catalog
from index.library.imaging import QUERY_BUDGET, open_image_at_least, open_query_image
from index.models import IndexReport, PhotoFile, ProgressCallback
from index.ports import Vectors, VisualEmbedder
from index.visual.store import VisualStore

log = logging.getLogger(__name__)

DECODE_SIDE = 256  # the bundled model sees the centre 224 of the shorter side scaled to 256
QUERY_SIDE = 320  # and a query's keypoints are found at a long side of 320 (near_duplicate)
PHASE = "visual"


@dataclass(frozen=True)
class VisualLimits:
    max_file_bytes: int
    max_pixels: int
    batch_size: int = 16


class VisualIndex:
    """The visual collection, its catalog record and the model that fills it."""

    def __init__(
        self,
        catalog: Catalog,
        store: VisualStore,
        embedder: VisualEmbedder,
        limits: VisualLimits,
    ) -> None:
        self.catalog = catalog
        self.store = store
        self.embedder = embedder
        self.limits = limits
        self._seen: list[tuple[str, Vectors]] = []  # vectors a describer's pass gave, to store
        self._seen_lock = threading.Lock()

    # --- indexing (the indexer's hook) --------------------------------------------------------
    def sync(
        self,
        photos: dict[str, PhotoFile],
        report: IndexReport,
        progress: ProgressCallback,
        stop: threading.Event,
    ) -> None:
        """Embed the photos that have no vector of the configured model; drop those gone."""
        self._start_again_on_model_change()
        self._remove_missing(photos)
        identity = self.embedder.identity
        done = self.catalog.visual_embedded()
        excluded = self.catalog.excluded_ids()
        todo = [
            p
            for p in photos.values()
            if done.get(p.photo_id) != identity and p.photo_id not in excluded
        ]
        progress(PHASE, 0, len(todo))
        for start in range(0, len(todo), self.limits.batch_size):
            if stop.is_set():
                return
            batch = todo[start : start + self.limits.batch_size]
            self._embed_batch(batch, report)
            progress(PHASE, min(start + len(batch), len(todo)), len(todo))

    # --- vectors from a describer's own pass (`index.ports.SeeingDescriber`) -------------------
    def prepare(self) -> None:
        """Before a run's describing: drop the collection if the model changed, so vectors the
        describer gives (`add_seen`) go into one of the configured identity."""
        self._start_again_on_model_change()

    def add_seen(self, photo_id: str, vector: Vectors, identity: str, report: IndexReport) -> None:
        """Keep a vector the describer's pass gave, when it is of the configured model; stored
        with the next ones (`flush_seen`), so the visual phase skips the photo."""
        if identity != self.embedder.identity:
            return
        with self._seen_lock:
            self._seen.append((photo_id, vector))
            due = len(self._seen) >= self.limits.batch_size
        if due:
            self.flush_seen(report)

    def flush_seen(self, report: IndexReport) -> None:
        """Store the vectors kept by `add_seen`, with the perceptual hashes the scan kept. One
        that cannot be stored is left to the visual phase (which decodes the photo again)."""
        with self._seen_lock:
            seen, self._seen = self._seen, []
            hashes = self.catalog.perceptual_hashes(photo_id for photo_id, _ in seen)
            kept = [(photo_id, vector) for photo_id, vector in seen if photo_id in hashes]
            if not kept:
                return
            ids = [photo_id for photo_id, _ in kept]
            try:
                self.store.upsert(ids, np.stack([v for _, v in kept]), [hashes[i] for i in ids])
            except (PeiTuError, OSError) as error:
                log.warning(
                    "visual vectors of %d photos left to the visual phase: %s", len(ids), error
                )
                return
            self.catalog.mark_visual_embedded(ids, self.embedder.identity)
            report.visual_embedded += len(ids)

    def _start_again_on_model_change(self) -> None:
        mismatch = self.store.mismatch
        emptied = (
            mismatch is None and self.store.count() == 0 and bool(self.catalog.visual_embedded())
        )
        if mismatch is not None:
            log.info("visual model changed (%s); embedding every photo's pixels again", mismatch)
            self.store.reset()
        if mismatch is not None or emptied:  # emptied: the collection was deleted by hand
            self.catalog.forget_visual_embedded()

    def _remove_missing(self, photos: dict[str, PhotoFile]) -> None:
        stale = (set(self.catalog.visual_embedded()) | self.store.ids()) - set(photos)
        if stale:
            self.store.delete(sorted(stale))
            self.catalog.forget_visual_embedded(stale)

    def _embed_batch(self, batch: list[PhotoFile], report: IndexReport) -> None:
        decoded = list(self._decoded(batch, report))
        if not decoded:
            return
        vectors = self.embedder.embed_images([image for _, image in decoded])
        ids = [photo.photo_id for photo, _ in decoded]
        self.store.upsert(ids, vectors, [image_phash(image) for _, image in decoded])
        self.catalog.mark_visual_embedded(ids, self.embedder.identity)
        report.visual_embedded += len(ids)

    def _decoded(
        self, batch: list[PhotoFile], report: IndexReport
    ) -> Iterator[tuple[PhotoFile, Image.Image]]:
        for photo in batch:
            try:
                yield photo, self.decode(photo.path)
            except ModelUnavailable:
                raise
            except (PeiTuError, OSError) as error:  # changed or vanished since the scan
                report.visual_failed += 1
                report.errors.append(f"{photo.rel_path}: visual: {error}")
                log.warning("no visual vector for %s: %s", photo.rel_path, error)

    # --- shared with the search ---------------------------------------------------------------
    def decode(self, source: Path | bytes) -> Image.Image:
        """An upright RGB image of a file or of bytes, decoded at reduced scale."""
        limits = self.limits
        image = open_image_at_least(
            source, DECODE_SIDE, max_pixels=limits.max_pixels, max_bytes=limits.max_file_bytes
        )
        return image.convert("RGB")

    def decode_query(self, source: Path | bytes, *, sent: bool = True) -> Image.Image:
        """An upright RGB image to search with, decoded at the size the model and the
        keypoints need (`open_query_image`): one someone sent within `QUERY_BUDGET`, a library
        photo (`sent` false) within the library's limits."""
        limits = self.limits
        image = open_query_image(
            source,
            QUERY_SIDE,
            max_pixels=limits.max_pixels,
            max_bytes=limits.max_file_bytes,
            budget=QUERY_BUDGET if sent else None,
        )
        return image.convert("RGB")

    def embed_one(self, image: Image.Image) -> Vectors:
        return np.asarray(self.embedder.embed_images([image])[0], dtype=np.float32)

    def forget(self, photo_id: str) -> None:
        """Take one photo out (a user deleted it from the index)."""
        self.store.delete([photo_id])
        self.catalog.forget_visual_embedded([photo_id])


def image_phash(image: Image.Image) -> str:
    """64-bit DCT pHash as 16 hex digits, the same measure as `index.library.dedup`."""
    return str(imagehash.phash(image))
