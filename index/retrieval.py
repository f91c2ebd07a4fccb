"""First-stage retrieval: from a text to candidate photos.

`DenseRetriever` is the baseline: one vector per photo (the whole description), cosine in Chroma.
`encode_documents` is how the indexer turns descriptions into stored vectors; retrieval and
indexing must agree on it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from index.models import Candidate, QueryFilters
from index.ports import Embedder, Vectors, VectorStore


def encode_documents(embedder: Embedder, descriptions: Sequence[str]) -> Vectors:
    """The stored vector of each description (baseline: the whole text embedded once)."""
    return embedder.embed(descriptions)


class DenseRetriever:
    """Embed the text, take the nearest photos by cosine."""

    def __init__(self, embedder: Embedder, store: VectorStore) -> None:
        self._embedder = embedder
        self._store = store

    def search(
        self, text: str, k: int, filters: QueryFilters | None, timings: dict[str, float]
    ) -> list[Candidate]:
        start = time.perf_counter()
        vector = self._embedder.embed([text])[0]
        middle = time.perf_counter()
        found = self._store.query(vector.tolist(), k)
        timings["embed"] = timings.get("embed", 0.0) + (middle - start) * 1000.0
        timings["search"] = timings.get("search", 0.0) + (time.perf_counter() - middle) * 1000.0
        return found
