"""What the time/place filters read, per photo, in memory (`Facets`), and, for a small library,
the photos' vectors beside them, searched exactly.

A filter becomes a mask over all photos in milliseconds, where Chroma's `where` reads every
row's metadata. Below `EXACT_UP_TO` photos the vectors are kept here too and a query compares
them all (`Facets.nearest`): quicker than an HNSW graph searched at `ef_search` 600 at that size,
and exact (recall 1.0). Measured with bench/bench_scale.py, one thread (BLAS pinned to one):
numpy over 2,000 unit vectors of 512 floats takes ~0.1 ms, over 20,000 ~0.8 ms, against ~1.4 ms
for hnswlib at ef 600; at 100,000 the graph wins (exact ~4 ms).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from index.models import Candidate, QueryFilters
from index.ports import Vectors
from index.search.stored import candidate
from index.understanding.filters import place_names, wall_clock_ts
from index.understanding.geo import METADATA_KEYS

EXACT_UP_TO = 20_000  # photos; above, the vectors are searched in a graph
PLACE_COLUMNS = tuple(METADATA_KEYS.values())  # place_province, place_city, place_district
FilterColumns = tuple[float | None, str | None, str | None, str | None]  # taken_ts, places


class Facets:
    """Per slot (a store's label or row): the time taken (NaN: none), the place names (as
    codes; -1: none), whether the slot holds a photo, and, when made with a `dimension`, its
    unit vector."""

    def __init__(self, dimension: int | None = None) -> None:
        self.taken = np.full(0, np.nan)
        self.places = np.full((0, len(PLACE_COLUMNS)), -1, dtype=np.int32)
        self.present = np.zeros(0, dtype=bool)
        self.vectors: Vectors | None = None
        if dimension is not None:
            self.vectors = np.zeros((0, dimension), dtype=np.float32)
        self.count = 0  # slots present: the photos in the collection
        self._codes: dict[str, int] = {}

    def set(
        self,
        slots: Sequence[int],
        columns: Sequence[FilterColumns],
        vectors: Vectors | None = None,
    ) -> None:
        """Set these slots' columns (and vectors, kept when this holds vectors)."""
        if not slots:
            return
        self._grow(max(slots) + 1)
        index = np.asarray(slots, dtype=np.int64)
        self.taken[index] = [np.nan if c[0] is None else c[0] for c in columns]
        self.places[index] = [[self._code(name) for name in c[1:]] for c in columns]
        self.count += int(np.count_nonzero(~self.present[np.unique(index)]))
        self.present[index] = True
        if self.vectors is not None and vectors is not None:
            self.vectors[index] = _unit(np.asarray(vectors, dtype=np.float32))

    def drop_vectors(self) -> None:
        """Stop keeping vectors (the library grew past `EXACT_UP_TO`)."""
        self.vectors = None

    def remove(self, slots: Sequence[int]) -> None:
        known = np.unique(np.asarray([x for x in slots if x < len(self.present)], dtype=np.int64))
        self.count -= int(np.count_nonzero(self.present[known]))
        self.present[known] = False

    def mask(self, filters: QueryFilters | None) -> np.ndarray:
        """True for each slot that `index.understanding.filters.matches` keeps."""
        keep = self.present.copy()
        if filters is None:
            return keep
        with np.errstate(invalid="ignore"):  # NaN (no time) compares false: not kept
            if filters.taken_from is not None:
                keep &= self.taken >= wall_clock_ts(filters.taken_from)
            if filters.taken_to is not None:
                keep &= self.taken < wall_clock_ts(filters.taken_to)
        if filters.place:
            codes = [self._codes[n] for n in place_names(filters.place) if n in self._codes]
            keep &= np.isin(self.places, codes).any(axis=1)
        return keep

    def nearest(
        self, query: Vectors, k: int, filters: QueryFilters | None
    ) -> list[tuple[int, float]]:
        """(slot, cosine) of the k photos the filters keep that are closest to `query`, closest
        first, compared one by one; only when this holds vectors."""
        assert self.vectors is not None
        keep = self.mask(filters)
        kept = int(np.count_nonzero(keep))
        if k <= 0 or not kept:
            return []
        unit = _unit(np.asarray(query, dtype=np.float32)[None])[0]
        cosines = np.where(keep, self.vectors @ unit, -np.inf)  # every slot: no copy of rows
        top = np.argpartition(-cosines, min(k, kept) - 1)[: min(k, kept)]
        best = top[np.argsort(-cosines[top], kind="stable")]
        return [(int(slot), float(cosines[slot])) for slot in best]

    def _code(self, name: str | None) -> int:
        if name is None:
            return -1
        return self._codes.setdefault(name, len(self._codes))

    def _grow(self, size: int) -> None:
        if size <= len(self.present):
            return
        size = max(size, 2 * len(self.present))
        extra = size - len(self.present)
        self.taken = np.concatenate([self.taken, np.full(extra, np.nan)])
        self.places = np.concatenate(
            [self.places, np.full((extra, len(PLACE_COLUMNS)), -1, dtype=np.int32)]
        )
        self.present = np.concatenate([self.present, np.zeros(extra, dtype=bool)])
        if self.vectors is not None:
            blank = np.zeros((extra, self.vectors.shape[1]), dtype=np.float32)
            self.vectors = np.concatenate([self.vectors, blank])


def filter_columns(metadata: dict[str, Any]) -> FilterColumns:
    """taken_ts (a number, else None) and the place names, as the filters read them."""
    taken = metadata.get("taken_ts")
    province, city, district = (
        metadata.get(c) if isinstance(metadata.get(c), str) else None for c in PLACE_COLUMNS
    )
    return (float(taken) if isinstance(taken, int | float) else None, province, city, district)


def _unit(rows: Vectors) -> Vectors:
    norms = np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    return np.asarray(rows / norms, dtype=np.float32)


class ExactCopy:
    """A small collection held whole in memory (ids, vectors, documents, metadata) and searched
    exactly: what a vector store answers from, in a process that asked for it, while the
    collection has at most `EXACT_UP_TO` photos and this process wrote nothing since."""

    def __init__(
        self,
        ids: Sequence[str],
        vectors: Vectors,
        documents: Sequence[str | None],
        metadatas: Sequence[dict[str, Any] | None],
    ) -> None:
        self._ids = list(ids)
        self._documents = [d or "" for d in documents]
        self._metadatas = [dict(m or {}) for m in metadatas]
        self._facets = Facets(vectors.shape[1] if len(vectors) else 1)
        columns = [filter_columns(m) for m in self._metadatas]
        self._facets.set(list(range(len(self._ids))), columns, vectors)

    def __len__(self) -> int:
        return len(self._ids)

    def query(
        self, vector: Sequence[float], k: int, filters: QueryFilters | None
    ) -> list[Candidate]:
        """The k nearest photos the filters keep, nearest first (`VectorStore.query`)."""
        query = np.asarray(vector, dtype=np.float32)
        return [
            candidate(self._ids[row], self._documents[row], dict(self._metadatas[row]), cosine)
            for row, cosine in self._facets.nearest(query, k, filters)
        ]
