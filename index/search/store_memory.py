"""An exact vector store in memory: brute-force cosine over a numpy matrix, behind the
`VectorStore` port.

For tests and tiny libraries held by one process: nothing is written to disk, and stores see
each other's writes only when they are opened on the same `MemorySpace` (as Chroma clients of
one folder or server do). Every query compares the text's vector with every stored one, so it
is exact (Chroma's HNSW is approximate) and its cost grows with the library: fine for a few
thousand photos. Chroma (`index.search.store`) stays the store users get.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from index.errors import IndexMismatch
from index.models import Candidate, QueryFilters
from index.ports import StoredVector, Vectors, VectorStore
from index.search.stored import candidate, identity_mismatch, scalar_metadata, vectors_of
from index.understanding.filters import matches

REBUILD_SUFFIX = "__rebuild"


@dataclass
class _Collection:
    """One named set of vectors with the identity they were made with."""

    identity: dict[str, Any]
    dimension: int
    ids: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)  # photo_id -> row of `vectors`
    vectors: Vectors = field(init=False)  # one row per photo, as given
    documents: list[str] = field(default_factory=list)
    metadatas: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.vectors = np.zeros((0, self.dimension), dtype=np.float32)

    def upsert(self, items: Sequence[StoredVector], vectors: Vectors) -> None:
        """Replace the rows of known photos; append the new ones in one go."""
        new: dict[str, int] = {}  # photo_id -> index in `items`
        for index, item in enumerate(items):
            row = self.rows.get(item.photo_id)
            if row is None:
                new[item.photo_id] = index
                continue
            self.vectors[row] = vectors[index]
            self.documents[row] = item.document
            self.metadatas[row] = scalar_metadata(item.metadata)
        if not new:
            return
        added = list(new.values())
        self.rows.update({photo_id: len(self.ids) + n for n, photo_id in enumerate(new)})
        self.ids.extend(new)
        self.vectors = np.vstack([self.vectors, vectors[added]])
        self.documents.extend(items[i].document for i in added)
        self.metadatas.extend(scalar_metadata(items[i].metadata) for i in added)

    def delete(self, photo_ids: Sequence[str]) -> None:
        gone = {i for i in photo_ids if i in self.rows}
        if not gone:
            return
        keep = [row for row, photo_id in enumerate(self.ids) if photo_id not in gone]
        self.ids = [self.ids[row] for row in keep]
        self.vectors = self.vectors[keep]
        self.documents = [self.documents[row] for row in keep]
        self.metadatas = [self.metadatas[row] for row in keep]
        self.rows = {photo_id: row for row, photo_id in enumerate(self.ids)}


class MemorySpace:
    """Named collections shared by the stores opened on it (one per process, or per test)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.collections: dict[str, _Collection] = {}


class MemoryStore(VectorStore):
    """One collection of a `MemorySpace`, tagged with the identity of the vectors it holds.

    Like Chroma's collection, it is made by the first write, never by a read; one made with
    another identity is refused (`mismatch`) until a rebuild replaces it."""

    def __init__(
        self,
        space: MemorySpace,
        name: str,
        model: str,
        dimension: int,
        document_encoding: str = "whole",
        *,
        identity: dict[str, Any] | None = None,
    ) -> None:
        """`identity`: recorded instead of (model, dimension, document encoding): the visual
        collection's (`index.visual.store.visual_identity`)."""
        self._space = space
        self._name = name
        self._dimension = dimension
        self._model, self._encoding = model, document_encoding
        self._identity: dict[str, Any] = identity or {
            "embedding_model": model,
            "dimension": dimension,
            "document_encoding": document_encoding,
        }

    # --- identity -------------------------------------------------------------------------
    @property
    def mismatch(self) -> IndexMismatch | None:
        with self._space.lock:
            found = self._space.collections.get(self._name)
        if found is None or found.identity == self._identity:
            return None
        return identity_mismatch(found.identity, self._identity)

    def _existing(self) -> _Collection | None:
        """Our collection, or None while there is none; raises the identity problem."""
        mismatch = self.mismatch
        if mismatch is not None:
            raise mismatch
        return self._space.collections.get(self._name)

    def _made(self) -> _Collection:
        found = self._existing()
        if found is None:
            found = _Collection(dict(self._identity), self._dimension)
            self._space.collections[self._name] = found
        return found

    # --- writes ---------------------------------------------------------------------------
    def upsert(self, items: Sequence[StoredVector]) -> None:
        if not items:
            return
        vectors = vectors_of(items, self._dimension)
        with self._space.lock:
            self._made().upsert(items, vectors)

    def delete(self, photo_ids: Sequence[str]) -> None:
        with self._space.lock:
            collection = self._existing()
            if collection is not None:
                collection.delete(photo_ids)

    # --- reads ----------------------------------------------------------------------------
    def query(
        self, vector: Sequence[float], k: int, filters: QueryFilters | None = None
    ) -> list[Candidate]:
        """The k photos of highest cosine among those `index.understanding.filters.matches` keeps (exact)."""
        if k <= 0:
            return []
        with self._space.lock:
            collection = self._existing()
            if collection is None or not collection.ids:
                return []
            rows = [r for r, m in enumerate(collection.metadatas) if matches(filters, m)]
            cosines = _cosines(collection.vectors[rows], vector)
            best = np.argsort(-cosines, kind="stable")[:k]
            return [_candidate(collection, rows[i], float(cosines[i])) for i in best]

    def get(self, photo_ids: Sequence[str]) -> list[StoredVector]:
        with self._space.lock:
            collection = self._existing()
            if collection is None:
                return []
            rows = [collection.rows[i] for i in photo_ids if i in collection.rows]
            return [_stored(collection, row) for row in rows]

    def ids(self) -> set[str]:
        with self._space.lock:
            collection = self._existing()
            return set() if collection is None else set(collection.ids)

    def count(self) -> int:
        with self._space.lock:
            collection = self._existing()
            return 0 if collection is None else len(collection.ids)

    # --- rebuilds -----------------------------------------------------------------------------
    def begin_rebuild(self) -> MemoryStore:
        rebuilt = MemoryStore(
            self._space,
            self._name + REBUILD_SUFFIX,
            self._model,
            self._dimension,
            self._encoding,
            identity=self._identity,
        )
        with self._space.lock:
            self._space.collections[rebuilt._name] = _Collection(
                dict(self._identity), self._dimension
            )
        return rebuilt

    def replace_with(self, rebuilt: MemoryStore) -> None:
        with self._space.lock:
            collection = rebuilt._space.collections.pop(rebuilt._name, None)
            if collection is None:
                collection = _Collection(dict(self._identity), self._dimension)
            self._space.collections[self._name] = collection

    def discard_rebuild(self, rebuilt: MemoryStore) -> None:
        with self._space.lock:
            rebuilt._space.collections.pop(rebuilt._name, None)


def _cosines(rows: Vectors, vector: Sequence[float]) -> npt.NDArray[np.float64]:
    """Cosine of each row with the vector (computed in float64: exact to the last digit kept)."""
    query = np.asarray(list(map(float, vector)), dtype=np.float64)
    matrix = rows.astype(np.float64)
    norms = np.linalg.norm(matrix, axis=1) * np.linalg.norm(query)
    return np.asarray(matrix @ query / np.maximum(norms, 1e-12), dtype=np.float64)


def _candidate(collection: _Collection, row: int, cosine: float) -> Candidate:
    metadata = dict(collection.metadatas[row])
    return candidate(collection.ids[row], collection.documents[row], metadata, cosine)


def _stored(collection: _Collection, row: int) -> StoredVector:
    vector = collection.vectors[row].copy()  # not a view: the matrix changes on writes
    metadata = dict(collection.metadatas[row])
    return StoredVector(collection.ids[row], vector, collection.documents[row], metadata)
