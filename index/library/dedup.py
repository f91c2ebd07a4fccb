"""Near-duplicate photos (bursts, edited or resized copies) collapse into one result.

Each photo's 64-bit perceptual hash (DCT pHash, `imagehash`) is computed when the scan reads the
photo (from the image it decodes anyway), kept in the catalog, and stored as 16 hex digits in the
vector store's metadata under `phash` when the photo is indexed. Two photos are near-duplicates
when their hashes differ in at most `MAX_DISTANCE` bits.

Why 10: over 2,000 photos of the evaluation set (2.0 million distinct pairs) no pair is within
10 bits (14 pairs are within 12); a copy resized to 60 %, recoloured and re-saved as JPEG q70 is
within 4 bits (100 of 100 tried); a burst neighbour shifted by 4 % of the width is within 10 bits
70 times in 100, by 2 % always, by 6 % rarely (10 in 100). Measured with bench/bench_query.py.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import imagehash
from PIL import Image

from index.errors import PhotoUnreadable
from index.library.imaging import DECODE_ERRORS, PhotoReader, eight_bit, read_photo
from index.models import Candidate

log = logging.getLogger(__name__)

METADATA_KEY = "phash"
MAX_DISTANCE = 10


def image_hash(image: Image.Image) -> str | None:
    """The pHash of a photo as `index.library.imaging.read_photo` decodes it (upright, a JPEG at reduced
    scale), as 16 hex digits; None for a mode it cannot be computed in (a CIELAB TIFF). The scan
    computes it there, once; the catalog keeps it."""
    try:
        return str(imagehash.phash(eight_bit(image)))
    except DECODE_ERRORS as error:
        log.warning("no perceptual hash for a %s image: %s", image.mode, error)
        return None


def perceptual_hash(
    source: Path | bytes,
    *,
    max_pixels: int,
    max_bytes: int | None = None,
    read: PhotoReader = read_photo,
) -> str | None:
    """The pHash of a photo file (or its bytes) not hashed by a scan, e.g. in a data folder
    made before the catalog kept hashes; None when it cannot be read.

    The scan has already refused unreadable and oversized files; a file that changed since is
    logged and left without a hash (it is then never collapsed).
    """
    try:
        decoded = read(source, max_pixels=max_pixels, max_bytes=max_bytes)
    except PhotoUnreadable as error:
        log.warning("no perceptual hash for %s: %s", error.path, error)
        return None
    return image_hash(decoded.image)


def hash_distance(first: str, second: str) -> int:
    """Number of differing bits between two hex hashes of the same length."""
    return (int(first, 16) ^ int(second, 16)).bit_count()


def collapse_near_duplicates(
    candidates: Sequence[Candidate], max_distance: int = MAX_DISTANCE
) -> list[Candidate]:
    """Keep the best-ranked photo of each group of near-duplicates, in the given order.

    A candidate without a usable hash is always kept.
    """
    kept: list[Candidate] = []
    kept_hashes: list[str] = []
    for candidate in candidates:
        digest = _hash_of(candidate)
        if digest is not None and _near_any(digest, kept_hashes, max_distance):
            log.debug("collapsed %s as a near-duplicate", candidate.path)
            continue
        kept.append(candidate)
        if digest is not None:
            kept_hashes.append(digest)
    return kept


def _hash_of(candidate: Candidate) -> str | None:
    value = candidate.metadata.get(METADATA_KEY)
    if not isinstance(value, str) or len(value) != 16:
        return None
    try:
        int(value, 16)
    except ValueError:
        return None
    return value


def _near_any(digest: str, others: Sequence[str], max_distance: int) -> bool:
    return any(hash_distance(digest, other) <= max_distance for other in others)
