"""What every vector store keeps and answers the same way: metadata reduced to scalars, a hit
as a `Candidate`, a stored row as a `StoredVector`, and the words for a collection's identity
(the text one's or the visual one's) in an `IndexMismatch`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from index.errors import IndexMismatch
from index.models import Candidate
from index.ports import StoredVector, Vectors


def vectors_of(items: Sequence[StoredVector], dimension: int) -> Vectors:
    """The items' vectors as float32 rows; ValueError when they are not of `dimension`."""
    vectors = np.asarray([list(map(float, i.vector)) for i in items], dtype=np.float32)
    if vectors.shape[1] != dimension:
        raise ValueError(f"vectors of dimension {vectors.shape[1]}, not {dimension}")
    return vectors


def scalar_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """str/int/float/bool values only, as Chroma keeps them (None and the rest are dropped)."""
    return {k: v for k, v in metadata.items() if isinstance(v, str | int | float | bool)}


def candidate(
    photo_id: str, document: str, metadata: dict[str, Any], similarity: float
) -> Candidate:
    """A hit: its path from the metadata, cosine similarity kept to six places."""
    return Candidate(
        photo_id=photo_id,
        path=str(metadata.get("path", "")),
        similarity=round(similarity, 6),
        description=document,
        metadata=metadata,
    )


def described(identity: dict[str, Any]) -> str:
    """A store identity (model, dimension, document encoding) as an error message says it."""
    return (
        f"embedding model {identity['embedding_model']!r} (dimension {identity['dimension']}, "
        f"document encoding {identity['document_encoding']!r})"
    )


def identity_mismatch(found: dict[str, Any], configured: dict[str, Any]) -> IndexMismatch:
    """The problem of a collection `found` with another identity than the `configured` one, in
    the words of its kind: the visual collection's (`index.visual.store.visual_identity`) is
    embedded again from the pixels, the text one's from the stored descriptions."""
    if "visual_model" in configured:
        return IndexMismatch(
            f"the visual index was built with {found.get('visual_model')!r} (dimension "
            f"{found.get('dimension')}) but {configured['visual_model']!r} (dimension "
            f"{configured['dimension']}) is configured; run `peitu index` to embed the "
            "photos' pixels again (descriptions are kept)"
        )
    return IndexMismatch(
        f"the index was built with {described(found)} but {described(configured)} is "
        "configured; run `peitu index --rebuild` to re-embed from the stored descriptions "
        "(nothing is described again)"
    )
