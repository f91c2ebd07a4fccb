"""The visual vectors: a second collection beside the text one, in the same vector store
(`index.ports.VectorStore`, whichever backend `PEITU_STORE__BACKEND` names), with its own identity.

The identity records the visual model with its preprocessing version, the dimension and this
module's schema version (under the keys the Chroma-only visual store of earlier versions wrote:
its collections are read as they are). A collection made with another identity is never queried
or added to: `mismatch` says so, and the next `peitu index` run drops it and embeds the photos'
pixels again (descriptions and the text index are not touched).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np

from index.errors import IndexMismatch
from index.ports import StoredVector, Vectors, VectorStore

SCHEMA_VERSION = 1
SUFFIX = "_visual"  # the collection is named after the text one: peitu_photos_visual


@dataclass(frozen=True)
class VisualHit:
    """A photo found by its look: cosine similarity to the query, its vector and pHash."""

    photo_id: str
    similarity: float
    vector: Vectors
    phash: str


def visual_identity(model: str, dimension: int) -> dict[str, Any]:
    """What the visual collection records of the vectors it holds (see `VectorStore`)."""
    return {"visual_model": model, "dimension": dimension, "visual_schema": SCHEMA_VERSION}


class VisualStore:
    """One vector per photo (its pixels' embedding) with its pHash, over any vector store opened
    with `visual_identity`."""

    def __init__(
        self,
        store: VectorStore,
        reconnecting: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext,
    ) -> None:
        """`reconnecting`: around the text store's `refresh` (embedded Chroma: see
        `index.search.store.ChromaStore.reconnecting`)."""
        self._store = store
        self.reconnecting = reconnecting

    @property
    def mismatch(self) -> IndexMismatch | None:
        """Set while the collection holds vectors of another visual model or preprocessing."""
        return self._store.mismatch

    def reset(self) -> None:
        """Drop the collection: the next write makes it anew with the configured identity."""
        self._store.replace_with(self._store.begin_rebuild())

    def upsert(self, photo_ids: Sequence[str], vectors: Vectors, phashes: Sequence[str]) -> None:
        rows = zip(photo_ids, vectors, phashes, strict=True)
        self._store.upsert([StoredVector(i, v.tolist(), "", {"phash": h}) for i, v, h in rows])

    def query(self, vector: Vectors, k: int) -> list[VisualHit]:
        """Up to k photos by cosine, most similar first."""
        return [
            VisualHit(row.photo_id, similarity, _array(row.vector), _phash(row.metadata))
            for row, similarity in self._store.nearest(vector.tolist(), k)
        ]

    def stored(self, photo_id: str) -> tuple[Vectors, str] | None:
        """A photo's vector and pHash, or None when it has none."""
        found = self._store.get([photo_id])
        return (_array(found[0].vector), _phash(found[0].metadata)) if found else None

    def delete(self, photo_ids: Sequence[str]) -> None:
        self._store.delete(photo_ids)

    def ids(self) -> set[str]:
        return self._store.ids()

    def count(self) -> int:
        return self._store.count()


def _array(embedding: Sequence[float] | Vectors) -> Vectors:
    return np.asarray(embedding, dtype=np.float32)


def _phash(metadata: dict[str, Any]) -> str:
    value = metadata.get("phash", "")
    return value if isinstance(value, str) else ""
