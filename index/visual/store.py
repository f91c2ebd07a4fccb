"""The visual vectors: a second Chroma collection beside the text one, with its own identity.

The collection's metadata records the visual model with its preprocessing version, the
dimension and this module's schema version. A collection made with another identity is never
queried or added to: `mismatch` says so, and the next `peitu index` run drops it and embeds the
photos' pixels again (descriptions and the text index are not touched).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from chromadb.api import ClientAPI
from chromadb.errors import NotFoundError

from index.errors import IndexMismatch, disk_full_raised
from index.ports import Vectors

log = logging.getLogger(__name__)
_T = TypeVar("_T")

SCHEMA_VERSION = 1
SUFFIX = "_visual"  # the collection is named after the text one: peitu_photos_visual
_BATCH = 500


@dataclass(frozen=True)
class VisualHit:
    """A photo found by its look: cosine similarity to the query, its vector and pHash."""

    photo_id: str
    similarity: float
    vector: Vectors
    phash: str


def _identity(model: str, dimension: int) -> dict[str, Any]:
    return {"visual_model": model, "dimension": dimension, "visual_schema": SCHEMA_VERSION}


class VisualStore:
    """One vector per photo (its pixels' embedding), tagged with the model that made them."""

    def __init__(
        self,
        client: ClientAPI,
        name: str,
        model: str,
        dimension: int,
        reconnect: Callable[[], ClientAPI] | None = None,
    ) -> None:
        self._client = client
        self._reconnect = reconnect  # embedded Chroma: see `reconnecting`
        self._lock = threading.RLock()
        self._name = name
        self._identity = _identity(model, dimension)
        self._collection: Any | None = self._existing()  # made by the first write, not a read

    def _existing(self) -> Any | None:
        try:
            return self._client.get_collection(self._name, embedding_function=None)
        except NotFoundError:
            return None

    def _open(self) -> Any:
        metadata = {"hnsw:space": "cosine", **self._identity}
        return self._client.get_or_create_collection(
            self._name, metadata=metadata, embedding_function=None
        )

    @property
    def mismatch(self) -> IndexMismatch | None:
        """Set while the collection holds vectors of another visual model or preprocessing."""
        with self._lock:
            self._collection = self._existing() or self._collection  # dropped or made elsewhere
            if self._collection is None:
                return None  # nothing embedded yet: nothing to mismatch
            found = self._collection.metadata or {}
        stored = {key: found.get(key) for key in self._identity}
        if stored == self._identity:
            return None
        return IndexMismatch(
            f"the visual index was built with {stored['visual_model']!r} (dimension "
            f"{stored['dimension']}) but {self._identity['visual_model']!r} (dimension "
            f"{self._identity['dimension']}) is configured; run `peitu index` to embed the "
            "photos' pixels again (descriptions are kept)"
        )

    def reset(self) -> None:
        """Drop the collection and create it anew with the configured identity."""
        with self._lock:
            with contextlib.suppress(NotFoundError, ValueError):
                self._client.delete_collection(self._name)
            self._collection = None  # made anew, with this identity, by the next write

    @contextlib.contextmanager
    def reconnecting(self) -> Iterator[None]:
        """Around the text store's `refresh`: embedded Chroma shares one engine per folder among
        clients, which only reads the disk again once every client is closed, ours too."""
        if self._reconnect is None:
            yield
            return
        with self._lock:
            with contextlib.suppress(Exception):  # a client that cannot close is dropped anyway
                getattr(self._client, "close", lambda: None)()
            try:
                yield
            finally:
                self._client = self._reconnect()
                self._collection = self._existing()

    def _read(self, use: Callable[[Any], _T], empty: _T) -> _T:
        """`use(collection)`, or `empty` while there is no collection (nothing embedded)."""
        with self._lock, disk_full_raised("the visual index"):
            if self._collection is None:
                self._collection = self._existing()
            if self._collection is None:
                return empty
            try:
                return use(self._collection)
            except NotFoundError:  # replaced by another process (a model change): look again
                self._collection = self._existing()
                return empty if self._collection is None else use(self._collection)

    def _write(self, use: Callable[[Any], _T]) -> _T:
        """`use(collection)`, making the collection first when there is none."""
        with self._lock, disk_full_raised("the visual index"):
            if self._collection is None:
                self._collection = self._open()
            try:
                return use(self._collection)
            except NotFoundError:  # replaced by another process (a model change): open anew
                self._collection = self._open()
                return use(self._collection)

    def upsert(self, photo_ids: Sequence[str], vectors: Vectors, phashes: Sequence[str]) -> None:
        for start in range(0, len(photo_ids), _BATCH):
            end = start + _BATCH
            self._upsert_batch(photo_ids[start:end], vectors[start:end], phashes[start:end])

    def _upsert_batch(self, ids: Sequence[str], rows: Vectors, hashes: Sequence[str]) -> None:
        self._write(
            lambda c: c.upsert(
                ids=list(ids),
                embeddings=[row.tolist() for row in rows],
                metadatas=[{"phash": h} for h in hashes],
            )
        )

    def query(self, vector: Vectors, k: int) -> list[VisualHit]:
        """Up to k photos by cosine, most similar first."""
        count = self.count()
        if count == 0:
            return []
        found = self._read(
            lambda c: c.query(
                query_embeddings=[vector.tolist()],
                n_results=min(k, count),
                include=["distances", "embeddings", "metadatas"],
            ),
            None,
        )
        if found is None:
            return []
        rows = zip(
            found["ids"][0],
            found["distances"][0],
            found["embeddings"][0],
            found["metadatas"][0],
            strict=True,
        )
        return [
            VisualHit(photo_id, round(1.0 - float(distance), 6), _array(embedding), _phash(meta))
            for photo_id, distance, embedding, meta in rows
        ]

    def stored(self, photo_id: str) -> tuple[Vectors, str] | None:
        """A photo's vector and pHash, or None when it has none."""
        found = self._read(
            lambda c: c.get(ids=[photo_id], include=["embeddings", "metadatas"]), None
        )
        if found is None or not found["ids"]:
            return None
        return _array(found["embeddings"][0]), _phash(found["metadatas"][0])

    def delete(self, photo_ids: Sequence[str]) -> None:
        ids = list(photo_ids)
        for start in range(0, len(ids), _BATCH):
            self._delete_batch(ids[start : start + _BATCH])

    def _delete_batch(self, ids: list[str]) -> None:
        self._read(lambda c: c.delete(ids=ids), None)

    def ids(self) -> set[str]:
        return set(self._read(lambda c: c.get(include=[])["ids"], []))

    def count(self) -> int:
        return self._read(lambda c: int(c.count()), 0)


def _array(embedding: Any) -> Vectors:
    return np.asarray(embedding, dtype=np.float32)


def _phash(metadata: Any) -> str:
    value = (metadata or {}).get("phash", "")
    return value if isinstance(value, str) else ""
