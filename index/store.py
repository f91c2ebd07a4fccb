"""Chroma vector store: embedded (PersistentClient) or client/server (HttpClient).

We always pass our own embeddings; Chroma's default embedding function (which downloads a
model) must never run, so collections are opened with `embedding_function=None`.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import chromadb
from chromadb.api import ClientAPI
from chromadb.config import Settings as ChromaClientSettings
from chromadb.errors import NotFoundError

from index.errors import IndexMismatch, ModelUnavailable
from index.models import Candidate
from index.ports import StoredVector

log = logging.getLogger(__name__)
_T = TypeVar("_T")

SCHEMA_VERSION = 1
_BATCH = 500
# A rebuild fills NAME__rebuild, then it takes NAME's place; the old one passes by NAME__retired.
REBUILD_SUFFIX = "__rebuild"
RETIRED_SUFFIX = "__retired"


def make_chroma_client(url: str, data_dir: Path) -> ClientAPI:
    """HttpClient for a server URL, else a PersistentClient under data_dir/chroma."""
    client_settings = ChromaClientSettings(anonymized_telemetry=False)
    if not url:
        return chromadb.PersistentClient(path=str(data_dir / "chroma"), settings=client_settings)
    parsed = urlparse(url)
    https = parsed.scheme == "https"
    port = parsed.port or (443 if https else 8000)
    try:
        return chromadb.HttpClient(
            host=parsed.hostname or "localhost", port=port, ssl=https, settings=client_settings
        )
    except Exception as error:  # chromadb raises bare ValueError/ConnectionError variants
        raise ModelUnavailable(f"cannot reach the Chroma server at {url}: {error}") from error


def _identity(model: str, dimension: int, encoding: str) -> dict[str, Any]:
    return {
        "embedding_model": model,
        "dimension": dimension,
        "schema_version": SCHEMA_VERSION,
        "document_encoding": encoding,
    }


class ChromaStore:
    """One collection holding one vector per photo, tagged with the model that made them."""

    def __init__(
        self,
        client: ClientAPI,
        name: str,
        model: str,
        dimension: int,
        document_encoding: str = "whole",
        reconnect: Callable[[], ClientAPI] | None = None,
    ) -> None:
        self._client = client
        self._reconnect = reconnect  # embedded Chroma: a fresh client that reads the disk again
        self._access = _ReadWriteLock()  # operations share it; `reload` takes it alone
        self._name = name
        self._identity = _identity(model, dimension, document_encoding)
        self._mismatch: IndexMismatch | None = None
        self._collection = self._open()

    def _open(self) -> Any:
        metadata = {"hnsw:space": "cosine", **self._identity}
        collection = self._client.get_or_create_collection(
            self._name, metadata=metadata, embedding_function=None
        )
        self._mismatch = self._identity_mismatch(collection.metadata or {})
        return collection

    @property
    def mismatch(self) -> IndexMismatch | None:
        """Set while the collection was built with another model (until it is rebuilt, here
        or by another process sharing the store)."""
        if self._mismatch is not None:
            self._reopen()  # looked at again: maybe rebuilt elsewhere since
        return self._mismatch

    def _reopen(self, tries: int = 20) -> None:
        """Open the collection now under our name, never creating one: another process may be
        between the two renames of `adopt`, and a collection made then would take its name."""
        for attempt in range(tries):
            try:
                collection = self._client.get_collection(self._name, embedding_function=None)
            except NotFoundError:
                if attempt == tries - 1:
                    raise ModelUnavailable(
                        f"the vector collection {self._name} is missing; "
                        "run `peitu index --rebuild`"
                    ) from None
                time.sleep(0.05)
                continue
            self._collection = collection
            self._mismatch = self._identity_mismatch(collection.metadata or {})
            return

    def _ready(self) -> Any:
        mismatch = self.mismatch
        if mismatch is not None:
            raise mismatch
        return self._collection

    def _on_collection(self, use: Callable[[Any], _T]) -> _T:
        """`use(collection)`; once more on the collection now under our name if ours is gone,
        as when another process (the server, `peitu index`) rebuilt the index meanwhile."""
        with self._access.shared():
            return self._use_or_reopen(use)

    def _use_or_reopen(self, use: Callable[[Any], _T]) -> _T:
        try:
            return use(self._ready())
        except NotFoundError:
            log.info(
                "collection %s was replaced by another process; opening the new one", self._name
            )
            self._reopen()
            return use(self._ready())

    def _identity_mismatch(self, found: dict[str, Any]) -> IndexMismatch | None:
        stored = {key: found.get(key) for key in self._identity}
        # Collections made before the encoding was recorded hold whole-description vectors.
        stored["document_encoding"] = found.get("document_encoding", "whole")
        if stored == self._identity:
            return None
        return IndexMismatch(
            f"the index was built with embedding model {stored['embedding_model']!r} "
            f"(dimension {stored['dimension']}, schema {stored['schema_version']}, "
            f"document encoding {stored['document_encoding']!r}) but "
            f"{self._identity['embedding_model']!r} (dimension {self._identity['dimension']}, "
            f"schema {SCHEMA_VERSION}, document encoding "
            f"{self._identity['document_encoding']!r}) is configured; run `peitu index --rebuild` "
            "to re-embed from the stored descriptions (nothing is described again)"
        )

    def reset(self) -> None:
        """Drop the collection and create it anew with the configured model's identity."""
        _drop_collection(self._client, self._name)
        self._collection = self._open()

    def reload(self) -> None:
        """Read the index afresh (embedded Chroma only): another process wrote to it, and this
        process's copy of the vector index is stale until it is opened again."""
        if self._reconnect is None:
            return
        with self._access.alone():
            close = getattr(self._client, "close", None)  # Client has it; the ClientAPI type not
            with contextlib.suppress(Exception):  # a client that cannot close is dropped anyway
                if close is not None:
                    close()
            self._client = self._reconnect()
            self._reopen()

    def start_rebuild(self) -> ChromaStore:
        """An empty collection beside this one, with the configured identity, to rebuild into
        while this one goes on answering queries (see `adopt`)."""
        shadow = self._name + REBUILD_SUFFIX
        _drop_collection(self._client, shadow)  # left over from a rebuild that never finished
        identity = self._identity
        return ChromaStore(
            self._client,
            shadow,
            identity["embedding_model"],
            identity["dimension"],
            identity["document_encoding"],
        )

    def adopt(self, rebuilt: ChromaStore) -> None:
        """Put a collection from `start_rebuild` in this one's place, under this one's name.

        The old collection is renamed away before the new one takes the name, and the handle
        queries use is swapped last, so a query never finds no collection."""
        retired = self._name + RETIRED_SUFFIX
        _drop_collection(self._client, retired)
        self._collection.modify(name=retired)
        rebuilt._collection.modify(name=self._name)
        self._collection, self._mismatch = rebuilt._collection, None
        _drop_collection(self._client, retired)

    def drop(self) -> None:
        """Delete this collection (a rebuild that was cancelled)."""
        _drop_collection(self._client, self._name)

    def upsert(self, items: Sequence[StoredVector]) -> None:
        for start in range(0, len(items), _BATCH):
            self._upsert_batch(items[start : start + _BATCH])

    def _upsert_batch(self, batch: Sequence[StoredVector]) -> None:
        self._on_collection(
            lambda c: c.upsert(
                ids=[i.photo_id for i in batch],
                embeddings=[list(map(float, i.vector)) for i in batch],
                documents=[i.document for i in batch],
                metadatas=[_clean_metadata(i.metadata) for i in batch],
            )
        )

    def update_metadata(self, photo_id: str, metadata: dict[str, Any]) -> None:
        """Replace one photo's metadata, keeping its vector."""
        self._on_collection(
            lambda c: c.update(ids=[photo_id], metadatas=[_clean_metadata(metadata)])
        )

    def query(
        self, vector: Sequence[float], k: int, where: dict[str, Any] | None = None
    ) -> list[Candidate]:
        count = self.count()
        if count == 0:
            return []
        found = self._on_collection(
            lambda c: c.query(
                query_embeddings=[list(map(float, vector))],
                n_results=min(k, count),
                where=where or None,
                include=["distances", "documents", "metadatas"],
            )
        )
        return _candidates(found)

    def delete(self, photo_ids: Sequence[str]) -> None:
        ids = list(photo_ids)
        for start in range(0, len(ids), _BATCH):
            self._delete_batch(ids[start : start + _BATCH])

    def _delete_batch(self, ids: list[str]) -> None:
        self._on_collection(lambda c: c.delete(ids=ids))

    def ids(self) -> set[str]:
        return set(self._on_collection(lambda c: c.get(include=[]))["ids"])

    def sample(self, size: int, seed: int = 0) -> list[list[float]]:
        """The vectors of up to `size` photos chosen at random (the same for the same seed and
        photos): the library's background for calibrating matches (`index.calibration`)."""
        ids = sorted(self.ids())
        chosen = random.Random(seed).sample(ids, size) if len(ids) > size else ids
        if not chosen:
            return []
        found = self._on_collection(lambda c: c.get(ids=chosen, include=["embeddings"]))
        return [list(map(float, vector)) for vector in found["embeddings"]]

    def count(self) -> int:
        return int(self._on_collection(lambda c: c.count()))

    def ping(self) -> None:
        try:
            self._client.heartbeat()
        except Exception as error:  # any transport failure means "unreachable"
            raise ModelUnavailable(f"the vector store is unreachable: {error}") from error


class _ReadWriteLock:
    """Many holders of `shared()` at once, or one of `alone()`."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._sharing = 0
        self._alone = False

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: not self._alone)
            self._sharing += 1
        try:
            yield
        finally:
            with self._changed:
                self._sharing -= 1
                self._changed.notify_all()

    @contextlib.contextmanager
    def alone(self) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: not self._alone and self._sharing == 0)
            self._alone = True
        try:
            yield
        finally:
            with self._changed:
                self._alone = False
                self._changed.notify_all()


def _drop_collection(client: ClientAPI, name: str) -> None:
    try:
        client.delete_collection(name)
    except Exception:  # chromadb raises NotFoundError/ValueError by version
        log.debug("collection %s did not exist", name)


def _clean_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """Chroma accepts str/int/float/bool values only; drop the rest (None)."""
    return {k: v for k, v in metadata.items() if isinstance(v, str | int | float | bool)}


def _candidates(found: Any) -> list[Candidate]:
    ids = found["ids"][0]
    distances = found["distances"][0]
    documents = found["documents"][0]
    metadatas = found["metadatas"][0]
    out = []
    for photo_id, distance, document, metadata in zip(
        ids, distances, documents, metadatas, strict=True
    ):
        meta = dict(metadata or {})
        out.append(
            Candidate(
                photo_id=photo_id,
                path=str(meta.get("path", "")),
                similarity=round(1.0 - float(distance), 6),
                description=document or "",
                metadata=meta,
            )
        )
    return out
