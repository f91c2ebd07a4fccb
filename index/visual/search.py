"""Photo → similar photos by what they look like (the visual collection), not by a description.

Near-duplicates are grouped: a burst or an edited copy of one moment shows once, with a note of
how many it stands for. Copies of the query photo itself (edited, cropped, recompressed, or its
burst neighbours) are found by matching local features (`index.library.near_duplicate`) among the
nearest few, folded into one result, labelled, and put first: someone searching with an edited
copy usually wants the original. Among the other results, two photos are near-duplicates when
their perceptual hashes are close (`index.library.dedup.MAX_DISTANCE`) or their vectors very close
(`NEAR_DUPLICATE_COSINE`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from index.errors import PeiTuError
from index.library.catalog import Catalog
from index.library.dedup import MAX_DISTANCE, hash_distance
from index.library.near_duplicate import Keypoints, keypoints, same_moment
from index.models import Note, NoteKind, Recommendation, RecommendResult
from index.ports import Vectors
from index.visual.index import VisualIndex, image_phash
from index.visual.store import VisualHit

log = logging.getLogger(__name__)

# Cosine of the bundled model's vectors above which two results count as one moment without
# looking closer (resized or recompressed copies); edits and bursts fall below it.
NEAR_DUPLICATE_COSINE = 0.8
VERIFY_TOP = 5  # the nearest groups checked by local features for copies of the query
VERIFY_MIN_COSINE = 0.45  # an edited copy stays above 0.5; below, no check is worth its time
_POOL_FACTOR = 4  # neighbours fetched per answer: room for the groups that collapse
SAME_MOMENT = "和这张图是同一个画面：同一张照片的副本、编辑版或同一组连拍"
LOOKS_ALIKE = "画面相似，相似度 {likeness:.0f}"
# 相似度 0–100 from the image vectors' cosine: 0 is no more alike than two unrelated photos
# (a quarter of the eval photos' random pairs are below 0.25, the median pair 0.29), 100 a
# near-duplicate (`NEAR_DUPLICATE_COSINE`); a photo's nearest neighbour is 0.5–0.7 (57–82).
UNRELATED_COSINE = 0.25
# a photo whose 相似度 rounds to 0 is no look-alike: it is left out, never shown as "相似度 0"
MIN_LIKENESS = 0.5
GROUPED = "；另有 {count} 张几乎相同的照片已合并"
EMPTY = "相册还没有视觉索引：运行一次 peitu index（不会重新描述照片）后再试"
QUERY_IMAGE = "<上传的图片>"

Locate = Callable[[str], Path | None]


@dataclass(frozen=True)
class Query:
    label: str  # what the answer's `query` says: "<上传的图片>" or the photo's file name
    vector: Vectors
    phash: str
    keypoints: Keypoints
    exclude: frozenset[str]  # the photo itself


@dataclass
class _Group:
    leader: VisualHit
    members: list[VisualHit] = field(default_factory=list)
    same_as_query: bool = False


class SimilarPhotos:
    """Similar-photo answers in the same shape as a recommendation (`RecommendResult`)."""

    def __init__(self, visual: VisualIndex, catalog: Catalog, locate: Locate, top_k: int) -> None:
        self._visual = visual
        self._catalog = catalog
        self._locate = locate  # photo_id -> its file, for the local-feature check
        self._top_k = top_k

    def for_image(self, data: bytes, top_k: int | None = None) -> RecommendResult:
        """Photos like an uploaded image. Raises `PhotoUnreadable` for what is not one."""
        started = time.perf_counter()
        image = self._visual.decode_query(data)
        vector = self._visual.embed_one(image)
        same = frozenset({hashlib.sha256(data).hexdigest()})
        query = Query(QUERY_IMAGE, vector, image_phash(image), keypoints(image), same)
        return self._answer(query, top_k, {"embed": _ms_since(started)})

    def for_photo(self, photo_id: str, path: Path, top_k: int | None = None) -> RecommendResult:
        """Photos like one of the library's (by its stored vector when it has one)."""
        started = time.perf_counter()
        image = self._visual.decode_query(path, sent=False)
        stored = self._visual.store.stored(photo_id)
        vector, phash = stored or (self._visual.embed_one(image), image_phash(image))
        query = Query(path.name, vector, phash, keypoints(image), frozenset({photo_id}))
        return self._answer(query, top_k, {"embed": _ms_since(started)})

    def _answer(
        self, query: Query, top_k: int | None, timings: dict[str, float]
    ) -> RecommendResult:
        mismatch = self._visual.store.mismatch
        if mismatch is not None:
            raise mismatch
        k = top_k or self._top_k
        started = time.perf_counter()
        hits = self._visual.store.query(query.vector, k * _POOL_FACTOR + len(query.exclude))
        timings["search"] = _ms_since(started)
        hits = [hit for hit in hits if hit.photo_id not in query.exclude]
        started = time.perf_counter()
        groups = fold_copies_of_query(group_near_duplicates(hits), lambda h: self._copy(query, h))
        timings["verify"] = _ms_since(started)
        results = self._recommendations(groups, k)
        return RecommendResult(query.label, results, timings, _empty_notes(results, hits))

    def _recommendations(self, groups: Sequence[_Group], k: int) -> list[Recommendation]:
        results: list[Recommendation] = []
        wanted = [group.leader.photo_id for group in groups]
        descriptions = self._catalog.best_descriptions(wanted)  # one read for all
        for group in groups:
            photo = self._catalog.photo(group.leader.photo_id)
            if photo is None:  # left the library since it was embedded
                continue
            stored = descriptions.get(photo.photo_id)
            similarity = group.leader.similarity
            alike = 100.0 if group.same_as_query else likeness(similarity)
            if alike < MIN_LIKENESS:  # no more alike than two unrelated photos
                continue
            results.append(
                Recommendation(
                    rank=len(results) + 1,
                    photo_id=photo.photo_id,
                    path=photo.rel_path,
                    similarity=similarity,
                    score=round(alike / 100.0, 4),
                    reason=_reason(group, alike),
                    description=stored.description if stored else "",
                    match=alike,
                    likeness=alike,
                )
            )
            if len(results) == k:
                break
        return results

    def _copy(self, query: Query, hit: VisualHit) -> bool:
        """Whether a hit shows the query's moment: by hash or vector, else by local features."""
        if _near(hit, query.vector, query.phash):
            return True
        if hit.similarity < VERIFY_MIN_COSINE:
            return False
        image = self._image_of(hit.photo_id)
        return image is not None and same_moment(query.keypoints, keypoints(image))

    def _image_of(self, photo_id: str) -> Image.Image | None:
        path = self._locate(photo_id)
        if path is None:
            return None
        try:
            return self._visual.decode_query(path, sent=False)
        except (PeiTuError, OSError) as error:  # changed or gone since it was indexed
            log.info("cannot compare with %s: %s", path, error)
            return None


def group_near_duplicates(hits: Sequence[VisualHit]) -> list[_Group]:
    """Hits in order, each near-duplicate folded into the first of its group."""
    groups: list[_Group] = []
    for hit in hits:
        home = next((g for g in groups if _near(hit, g.leader.vector, g.leader.phash)), None)
        if home is None:
            groups.append(_Group(hit))
        else:
            home.members.append(hit)
    return groups


def fold_copies_of_query(
    groups: list[_Group], is_copy: Callable[[VisualHit], bool], verify_top: int = VERIFY_TOP
) -> list[_Group]:
    """The groups among the nearest `verify_top` that show the query's moment become one,
    first; the others keep their order."""
    copies = [g for g in groups[:verify_top] if is_copy(g.leader)]
    if not copies:
        return groups
    members = [hit for g in copies for hit in g.members] + [g.leader for g in copies[1:]]
    first = _Group(copies[0].leader, members, same_as_query=True)
    return [first, *(g for g in groups if g not in copies)]


def _near(hit: VisualHit, vector: Vectors, phash: str) -> bool:
    if hit.phash and phash and hash_distance(hit.phash, phash) <= MAX_DISTANCE:
        return True
    return float(np.dot(hit.vector, vector)) >= NEAR_DUPLICATE_COSINE


def likeness(cosine: float) -> float:
    """相似度 0–100 of two photos from their image vectors' cosine (see `UNRELATED_COSINE`)."""
    share = (cosine - UNRELATED_COSINE) / (NEAR_DUPLICATE_COSINE - UNRELATED_COSINE)
    return round(100.0 * min(1.0, max(0.0, share)), 1)


def _reason(group: _Group, alike: float) -> str:
    head = SAME_MOMENT if group.same_as_query else LOOKS_ALIKE
    reason = head.format(likeness=alike)
    if group.members:
        reason += GROUPED.format(count=len(group.members))
    return reason


def _empty_notes(results: Sequence[Recommendation], hits: Sequence[VisualHit]) -> tuple[Note, ...]:
    """Why an answer has no photos: an empty visual index, or nothing like the image."""
    if results:
        return ()
    if not hits:
        return (Note(NoteKind.NO_VISUAL_INDEX, EMPTY),)
    return (Note(NoteKind.NO_SIMILAR, "没有找到相似的照片。"),)


def _ms_since(started: float, clock: Callable[[], float] = time.perf_counter) -> float:
    return round((clock() - started) * 1000, 1)
