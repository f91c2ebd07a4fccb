"""Chroma vector store: embedded (PersistentClient) or client/server (HttpClient), behind the
`VectorStore` port. Chroma's own dialect lives here only: the `where` clause a query's
`QueryFilters` become (`chroma_where`), collection names, metadata kept to scalars.

We always pass our own embeddings; Chroma's default embedding function (which downloads a
model) must never run, so collections are opened with `embedding_function=None`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import chromadb
import numpy as np
from chromadb.api import ClientAPI
from chromadb.api.shared_system_client import SharedSystemClient
from chromadb.config import Settings as ChromaClientSettings
from chromadb.errors import NotFoundError

from index.errors import DiskFull, IndexMismatch, ModelUnavailable, PeiTuError, disk_full_raised
from index.models import Candidate, QueryFilters
from index.ports import StoredVector, Vectors, VectorStore, sampled
from index.search.exact import EXACT_UP_TO, ExactCopy
from index.search.retrieval import DocumentEncoder
from index.search.stored import candidate, identity_mismatch, scalar_metadata
from index.understanding.filters import place_names, wall_clock_ts
from index.understanding.geo import METADATA_KEYS

log = logging.getLogger(__name__)
_T = TypeVar("_T")
Where = dict[str, Any]

SCHEMA_VERSION = 1
# Upserts and deletes go to Chroma in batches this large (its own maximum is ~5,400 records).
_BATCH = 2000
# HNSW search and write-back parameters, given to new collections and set on older ones when
# they are opened: all of them can change on a live collection, so none is part of the identity.
# ef_search 600 (Chroma's default 100) keeps recall@20 >= 0.99 on 355k photos with many near
# duplicates (0.98 at 200; bench_scale.py); it takes effect when a process loads the index,
# which is after `_open` has set it. sync_threshold
# writes the graph to disk every 20,000 changes rather than every 1,000 (Chroma's default), which
# made inserts into a large collection slow. The construction parameters (M 16,
# ef_construction 100) stay Chroma's defaults; changing them would need a new collection.
HNSW_TUNING: dict[str, int] = {"ef_search": 600, "sync_threshold": 20_000, "batch_size": 2_000}
# A rebuild fills NAME__rebuild, then it takes NAME's place; the old one passes by NAME__retired.
REBUILD_SUFFIX = "__rebuild"
RETIRED_SUFFIX = "__retired"
# Set in a rebuilt collection's metadata once it is complete, before the swap starts.
REBUILT_KEY = "rebuild_complete"
SwapHook = Callable[[str], None]  # told each step of `replace_with`: "started", "marked", ...


def _always() -> bool:
    return True


def _never() -> bool:
    return False


def _no_hook(step: str) -> None:
    return None


def make_chroma_client(url: str, data_dir: Path) -> ClientAPI:
    """HttpClient for a server URL, else a PersistentClient under data_dir/chroma."""
    client_settings = ChromaClientSettings(anonymized_telemetry=False)
    if not url:
        return _persistent_client(data_dir / "chroma", client_settings)
    parsed = urlparse(url)
    https = parsed.scheme == "https"
    port = parsed.port or (443 if https else 8000)
    try:
        return chromadb.HttpClient(
            host=parsed.hostname or "localhost", port=port, ssl=https, settings=client_settings
        )
    except Exception as error:  # chromadb raises bare ValueError/ConnectionError variants
        raise ModelUnavailable(f"cannot reach the Chroma server at {url}: {error}") from error


def _persistent_client(folder: Path, settings: ChromaClientSettings) -> ClientAPI:
    """Embedded Chroma in `folder`. Opening writes (a row each time): on a full disk it fails,
    and Chroma keeps the half-opened engine for the folder, which is dropped here so that a
    later try (after space came back, see `index.library.space`) opens it afresh."""
    try:
        with disk_full_raised(f"the Chroma index in {folder}"):
            return chromadb.PersistentClient(path=str(folder), settings=settings)
    except DiskFull:
        SharedSystemClient._identifier_to_system.pop(str(folder), None)
        raise


def _identity(model: str, dimension: int, encoding: str) -> dict[str, Any]:
    return {
        "embedding_model": model,
        "dimension": dimension,
        "schema_version": SCHEMA_VERSION,
        "document_encoding": encoding,
    }


class ChromaStore(VectorStore):
    """One collection holding one vector per photo, tagged with the model that made them.

    The collection is made by the first write (or `reset`/`begin_rebuild`), never by a read:
    `peitu status` or `recommend` on a fresh data folder leave Chroma as they found it.

    A rebuild is swapped in by `replace_with` in steps (mark the rebuilt collection complete, rename
    the old one away, rename the rebuilt one in, drop the old one). Each step is one Chroma
    write, and a process killed between two of them is recovered from by the next store that
    opens the collection (`_recover_swap`): the complete rebuild takes the name. Readers recover
    only while `may_recover()` says no indexing job runs, since that job may be swapping now.
    """

    def __init__(
        self,
        client: ClientAPI,
        name: str,
        model: str,
        dimension: int,
        document_encoding: str = DocumentEncoder().identity,
        reconnect: Callable[[], ClientAPI] | None = None,
        *,
        identity: dict[str, Any] | None = None,
        tuning: Mapping[str, int] = HNSW_TUNING,
        may_recover: Callable[[], bool] | None = None,
        swap_hook: SwapHook | None = None,
    ) -> None:
        """`identity`: recorded instead of (model, dimension, document encoding): the visual
        collection's (`index.visual.store.visual_identity`, the keys it always had).
        `tuning`: the HNSW parameters given to the collection (`{}`: Chroma's own, which the
        visual collection has always had)."""
        self._client = client
        self._reconnect = reconnect  # embedded Chroma: a fresh client that reads the disk again
        self._access = _ReadWriteLock()  # operations share it; `refresh` takes it alone
        self._name = name
        self._identity = identity or _identity(model, dimension, document_encoding)
        self._tuning = dict(tuning)
        self._may_recover = may_recover or _always
        self._swap_hook = swap_hook or _no_hook  # tests: told each step of `replace_with`
        self._mismatch: IndexMismatch | None = None
        self._count: int | None = None  # cached; forgotten on every write and refresh
        self._counting: object = None
        self._collection: Any | None = None  # None while no collection has our name
        self._copy = _CopyKeeper(self)  # a small collection held in memory (after `warm`)
        self._lookup(tries=1)

    def _create(self) -> Any:
        configuration = {"hnsw": {"space": "cosine", **self._tuning}}
        collection = self._client.get_or_create_collection(
            self._name,
            metadata=dict(self._identity),
            configuration=configuration,  # type: ignore[arg-type]  # a TypedDict in chromadb
            embedding_function=None,
        )
        self._collection = collection
        self._mismatch = self._identity_mismatch(collection.metadata or {})
        _tune(collection, self._tuning)
        return collection

    @property
    def mismatch(self) -> IndexMismatch | None:
        """Set while the collection was built with another model (until it is rebuilt, here
        or by another process sharing the store)."""
        if self._mismatch is not None:
            self._lookup()  # looked at again: maybe rebuilt elsewhere since
        return self._mismatch

    def _lookup(self, tries: int = 20) -> None:
        """Open the collection now under our name, never creating one. While an indexing job
        may be between the two renames of `replace_with` (`may_recover()` false), a missing name is
        waited for; otherwise an interrupted swap is finished first (`_recover_swap`)."""
        for attempt in range(tries):
            recover = self._may_recover()
            if recover:
                self._recover_swap()
            collection = _get_collection(self._client, self._name)
            if collection is not None:
                self._collection = collection
                self._count = self._counting = None
                self._copy.forget()
                self._mismatch = self._identity_mismatch(collection.metadata or {})
                _tune(collection, self._tuning)
                return
            if recover:
                break  # nobody is swapping: the collection does not exist (yet)
            if attempt < tries - 1:
                time.sleep(0.05)
        self._collection, self._mismatch = None, None

    def recover(self) -> None:
        """Finish a swap a killed process left half done, drop a rebuilt collection a killed
        rebuild left unfinished, and open the result. For the holder of the index lock
        (nobody else can be rebuilding or swapping then)."""
        with self._access.shared():
            self._recover_swap()
            unfinished = _get_collection(self._client, self._name + REBUILD_SUFFIX)
            if unfinished is not None and not (unfinished.metadata or {}).get(REBUILT_KEY):
                log.warning(
                    "removing %s, left by a rebuild that stopped before it was done",
                    unfinished.name,
                )
                _drop_collection(self._client, unfinished.name)
            self._lookup(tries=1)

    def _recover_swap(self) -> None:
        try:
            self._finish_swap()
        except Exception as error:  # chromadb raises several types; another process won the race
            log.info("another process is finishing the interrupted swap (%s)", error)

    def _finish_swap(self) -> None:
        client, name, retired_name = self._client, self._name, self._name + RETIRED_SUFFIX
        current = _get_collection(client, name)
        retired = _get_collection(client, retired_name)
        shadow = _get_collection(client, name + REBUILD_SUFFIX)
        if shadow is not None and _swap_started(shadow, current, retired):
            log.warning("finishing the swap of a rebuilt index that was interrupted")
            if current is not None:
                _drop_collection(client, retired_name)
                current.modify(name=retired_name)
            shadow.modify(name=name)
        elif current is None and retired is not None:
            log.warning("restoring the index that an interrupted rebuild had renamed away")
            retired.modify(name=name)
            return
        elif retired is None:
            return
        _drop_collection(client, retired_name)

    def _ready(self) -> Any | None:
        if self._collection is None:
            self._lookup(tries=1)  # made since by a write here or in another process?
        mismatch = self.mismatch
        if mismatch is not None:
            raise mismatch
        return self._collection

    def _read(self, use: Callable[[Any], _T], empty: _T) -> _T:
        """`use(collection)`, or `empty` while there is no collection (nothing indexed)."""
        with self._access.shared(), disk_full_raised("the Chroma index"):
            return self._use_or_reopen(use, lambda: empty)

    def _write(self, use: Callable[[Any], _T]) -> _T:
        """`use(collection)`, making the collection first when there is none."""
        with self._access.shared(), disk_full_raised("the Chroma index"):
            return self._use_or_reopen(use, lambda: use(self._create()))

    def _use_or_reopen(self, use: Callable[[Any], _T], missing: Callable[[], _T]) -> _T:
        """`use(collection)`; once more on the collection now under our name if ours is gone,
        as when another process (the server, `peitu index`) rebuilt the index meanwhile."""
        collection = self._ready()
        if collection is None:
            return missing()
        try:
            return use(collection)
        except NotFoundError:
            log.info(
                "collection %s was replaced by another process; opening the new one", self._name
            )
            self._lookup()
            collection = self._ready()
            return missing() if collection is None else use(collection)

    def _identity_mismatch(self, found: dict[str, Any]) -> IndexMismatch | None:
        stored = {key: found.get(key) for key in self._identity}
        if "document_encoding" in self._identity:
            # Collections made before the encoding was recorded hold whole-description vectors.
            stored["document_encoding"] = found.get("document_encoding", "whole")
        if stored == self._identity:
            return None
        if "embedding_model" not in self._identity:
            return identity_mismatch(stored, self._identity)
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
        self._count = self._counting = None
        self._copy.forget()
        self._create()

    def refresh(self) -> None:
        """Read the index afresh (embedded Chroma only): another process wrote to it, and this
        process's copy of the vector index is stale until it is opened again. The cached count
        is forgotten either way (a Chroma server is shared live, but the count is ours), and so
        is the copy in memory (made again in the background)."""
        self._count = self._counting = None
        self._copy.forget()
        if self._reconnect is None:
            return
        with self._access.alone():
            close = getattr(self._client, "close", None)  # Client has it; the ClientAPI type not
            with contextlib.suppress(Exception):  # a client that cannot close is dropped anyway
                if close is not None:
                    close()
            # The old handle belongs to the closed client: never used again, even when the
            # lookup below finds nothing (its calls would fail inside Chroma's bindings).
            self._collection, self._mismatch = None, None
            self._client = self._reconnect()
            self._lookup()

    @contextlib.contextmanager
    def reconnecting(self) -> Iterator[None]:
        """Around another store's `refresh` on the same embedded folder (the other collection):
        Chroma shares one engine per folder among clients, and it reads the disk again only
        once every client is closed, this one too."""
        if self._reconnect is None:
            yield
            return
        with self._access.alone():
            with contextlib.suppress(Exception):  # a client that cannot close is dropped anyway
                getattr(self._client, "close", lambda: None)()
            self._collection, self._mismatch = None, None
            try:
                yield
            finally:
                self._count = self._counting = None
                self._copy.forget()
                self._client = self._reconnect()
                self._lookup()

    def begin_rebuild(self) -> ChromaStore:
        """An empty collection beside this one, with the configured identity, to rebuild into
        while this one goes on answering queries (see `replace_with`)."""
        shadow = self._name + REBUILD_SUFFIX
        _drop_collection(self._client, shadow)  # left over from a rebuild that never finished
        rebuilt = ChromaStore(
            self._client,
            shadow,
            "",  # no model nor dimension: the identity says them
            0,
            identity=self._identity,
            tuning=self._tuning,
            may_recover=_never,  # its name is not one that is swapped
        )
        rebuilt._create()
        return rebuilt

    def replace_with(self, rebuilt: ChromaStore) -> None:
        """Put a collection from `begin_rebuild` in this one's place, under this one's name.

        The old collection is renamed away before the new one takes the name, and the handle
        queries use is swapped last, so a query never finds no collection. A kill between any
        two steps is finished by the next open (`_recover_swap`)."""
        self._swap_hook("started")
        new = rebuilt._collection if rebuilt._collection is not None else rebuilt._create()
        retired = self._name + RETIRED_SUFFIX
        new.modify(metadata={**self._identity, REBUILT_KEY: True})
        self._swap_hook("marked")
        _drop_collection(self._client, retired)
        current = _get_collection(self._client, self._name)
        if current is not None:
            current.modify(name=retired)
        self._swap_hook("retired")
        new.modify(name=self._name)
        self._swap_hook("renamed")
        self._collection, self._mismatch = new, None
        self._count = self._counting = None
        self._copy.forget()
        _drop_collection(self._client, retired)
        self._swap_hook("dropped")

    def discard_rebuild(self, rebuilt: ChromaStore) -> None:
        """Delete a collection from `begin_rebuild` (a rebuild that was cancelled)."""
        _drop_collection(rebuilt._client, rebuilt._name)

    def flush(self) -> None:
        return None  # Chroma persists its index itself

    def warm(self) -> None:
        """Hold a small collection (at most `EXACT_UP_TO` photos) in memory from now on and
        answer queries from it (`index.search.exact`): Chroma's own query costs milliseconds
        even at 2,000 photos and its `where` reads every row's metadata, ~0.3 s at 20,000. Made
        now, and again in the background after a write or a `refresh`; Chroma answers
        meanwhile. A one-shot command never calls this: reading 20,000 vectors costs more than
        its one query."""
        self._copy.keep()

    def _whole_copy(self) -> ExactCopy | None:
        """The collection read whole, if it is small enough to keep (else None)."""
        count = self.count()
        if count == 0 or count > EXACT_UP_TO:
            return None
        found = self._read(lambda c: c.get(include=["embeddings", "documents", "metadatas"]), None)
        if found is None:
            return None
        vectors = np.asarray(found["embeddings"], dtype=np.float32)
        return ExactCopy(found["ids"], vectors, found["documents"], found["metadatas"])

    def upsert(self, items: Sequence[StoredVector]) -> None:
        for start in range(0, len(items), _BATCH):
            self._upsert_batch(items[start : start + _BATCH])

    def _upsert_batch(self, batch: Sequence[StoredVector]) -> None:
        self._count = self._counting = None
        self._copy.forget()
        self._write(
            lambda c: c.upsert(
                ids=[i.photo_id for i in batch],
                embeddings=[list(map(float, i.vector)) for i in batch],
                documents=[i.document for i in batch],
                metadatas=[scalar_metadata(i.metadata) for i in batch],
            )
        )

    def set_metadata(self, photo_id: str, metadata: dict[str, Any]) -> None:
        """Replace one photo's metadata, keeping its vector."""
        self._copy.forget()
        self._read(lambda c: c.update(ids=[photo_id], metadatas=[scalar_metadata(metadata)]), None)

    def query(
        self, vector: Sequence[float], k: int, filters: QueryFilters | None = None
    ) -> list[Candidate]:
        """The k nearest photos matching `filters` (fewer when the collection holds fewer): one
        ANN query plus the hits' documents and metadata, nothing in proportion to its size."""
        if k <= 0:
            return []
        copy = self._copy.current()
        if copy is not None:
            return copy.query(vector, k, filters)
        where = chroma_where(filters)
        found = self._read(
            lambda c: c.query(
                query_embeddings=[list(map(float, vector))],
                n_results=k,
                where=where or None,
                include=["distances", "documents", "metadatas"],
            ),
            None,
        )
        return [] if found is None else _candidates(found)

    def nearest(self, vector: Sequence[float], k: int) -> list[tuple[StoredVector, float]]:
        """As `VectorStore.nearest`, in one Chroma query (the rows come with the hits)."""
        if k <= 0:
            return []
        found = self._read(
            lambda c: c.query(
                query_embeddings=[list(map(float, vector))],
                n_results=k,
                include=["distances", "embeddings", "documents", "metadatas"],
            ),
            None,
        )
        if found is None:
            return []
        return [
            (StoredVector(hit.photo_id, _row(row), hit.description, hit.metadata), hit.similarity)
            for hit, row in zip(_candidates(found), found["embeddings"][0], strict=True)
        ]

    def delete(self, photo_ids: Sequence[str]) -> None:
        ids = list(photo_ids)
        for start in range(0, len(ids), _BATCH):
            self._delete_batch(ids[start : start + _BATCH])

    def _delete_batch(self, ids: list[str]) -> None:
        self._count = self._counting = None
        self._copy.forget()
        self._read(lambda c: c.delete(ids=ids), None)  # nothing to delete from no collection

    def get(self, photo_ids: Sequence[str]) -> list[StoredVector]:
        ids = list(photo_ids)
        if not ids:
            return []
        found = self._read(
            lambda c: c.get(ids=ids, include=["embeddings", "documents", "metadatas"]), None
        )
        if found is None:
            return []
        rows = zip(
            found["ids"], found["embeddings"], found["documents"], found["metadatas"], strict=True
        )
        return [StoredVector(i, _row(v), d or "", dict(m or {})) for i, v, d, m in rows]

    def ids(self) -> set[str]:
        return set(self._read(lambda c: c.get(include=[])["ids"], []))

    def sample(self, size: int, seed: int = 0) -> list[list[float]]:
        """As `VectorStore.sample` chooses them, reading the vectors alone (a cold query's
        calibration reads 512 of them)."""
        chosen = sampled(self.ids(), size, seed)
        if not chosen:
            return []
        found = self._read(lambda c: c.get(ids=chosen, include=["embeddings"]), None)
        if found is None:
            return []
        return [list(map(float, vector)) for vector in found["embeddings"]]

    def count(self) -> int:
        """Vectors in the collection; counted once after each change this process made or
        `refresh` heard of (Chroma counts by reading its whole table), then remembered."""
        cached = self._count
        if cached is not None:
            return cached
        self._counting = counting = object()  # a write meanwhile sets _count, and so this, aside
        counted = self._read(lambda c: int(c.count()), None)
        if counted is None:  # no collection yet: not remembered, one may be made elsewhere
            return 0
        if self._counting is counting and self._count is None:
            self._count = counted
        return counted

    def ping(self) -> None:
        try:
            self._client.heartbeat()
        except Exception as error:  # any transport failure means "unreachable"
            raise ModelUnavailable(f"the vector store is unreachable: {error}") from error


_SETTLE_S = 5.0  # seconds without a change before the copy in memory is read again


class _CopyKeeper:
    """The store's copy in memory (`ChromaStore.warm`): forgotten on every change, made again in
    one background thread once no change came for `_SETTLE_S` (an index job writes batch after
    batch: the copy is not read again after each); a copy read while a change came in is
    thrown away."""

    def __init__(self, store: ChromaStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._wanted = False
        self._copy: ExactCopy | None = None
        self._generation = 0  # changes seen; a copy is kept only if none came while it was read
        self._tried = -1  # the generation last read (a collection too large gives no copy)
        self._making = False
        self._changed_at = 0.0

    def keep(self) -> None:
        """From now on keep a copy; make it now (in this thread)."""
        with self._lock:
            self._wanted = True
            self._making = True
        self._make()

    def forget(self) -> None:
        with self._lock:
            self._copy = None
            self._generation += 1
            self._changed_at = time.monotonic()

    def current(self) -> ExactCopy | None:
        """The copy, or None: not wanted, too large, or (after a change) being made again."""
        with self._lock:
            if not self._wanted or self._making or self._tried == self._generation:
                return self._copy
            if time.monotonic() - self._changed_at < _SETTLE_S:
                return None  # writes may still be coming: Chroma answers meanwhile
            self._making = True
        threading.Thread(target=self._make, name="chroma-copy", daemon=True).start()
        return None

    def _make(self) -> None:
        with self._lock:
            generation = self._generation
        try:
            made = self._store._whole_copy()
        except PeiTuError as error:  # a mismatched index, an unreachable server: Chroma answers
            log.info("the collection is not held in memory: %s", error)
            made = None
        except Exception as error:  # chromadb raises many types
            log.warning("could not read the collection into memory: %s", error)
            made = None
        with self._lock:
            self._making = False
            if generation == self._generation:
                self._copy, self._tried = made, generation


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


def chroma_where(filters: QueryFilters | None) -> Where | None:
    """A Chroma metadata `where` for the filters, or None when there is nothing to filter."""
    if filters is None:
        return None
    clauses = _time_clauses(filters)
    if filters.place:
        names = list(place_names(filters.place))
        clauses.append({"$or": [{key: {"$in": names}} for key in METADATA_KEYS.values()]})
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _time_clauses(filters: QueryFilters) -> list[Where]:
    clauses: list[Where] = []
    if filters.taken_from is not None:
        clauses.append({"taken_ts": {"$gte": wall_clock_ts(filters.taken_from)}})
    if filters.taken_to is not None:
        clauses.append({"taken_ts": {"$lt": wall_clock_ts(filters.taken_to)}})
    return clauses


def _swap_started(shadow: Any, current: Any | None, retired: Any | None) -> bool:
    """True when `replace_with` had begun with this rebuilt collection: it is complete. The old
    collection is renamed away only then, so a missing name beside a retired one says so too
    (for a swap an older PeiTu began, which did not mark the collection)."""
    marked = bool((shadow.metadata or {}).get(REBUILT_KEY))
    return marked or (current is None and retired is not None)


def _get_collection(client: ClientAPI, name: str) -> Any | None:
    try:
        return client.get_collection(name, embedding_function=None)
    except NotFoundError:
        return None


def _tune(collection: Any, tuning: dict[str, int]) -> None:
    """Give a collection the search and write-back parameters `tuning` (`HNSW_TUNING`: older
    text collections were made with Chroma's defaults); a store that refuses keeps what it has."""
    if not tuning:
        return
    current = (collection.configuration or {}).get("hnsw") or {}
    if all(current.get(key) == value for key, value in tuning.items() if key in current):
        return
    try:
        collection.modify(configuration={"hnsw": dict(tuning)})
    except Exception as error:  # chromadb raises several types by version and backend
        log.warning("could not tune the HNSW parameters of %s: %s", collection.name, error)


def _drop_collection(client: ClientAPI, name: str) -> None:
    try:
        client.delete_collection(name)
    except Exception:  # chromadb raises NotFoundError/ValueError by version
        log.debug("collection %s did not exist", name)


def _row(embedding: Any) -> Vectors:
    """A vector as Chroma gives it back (a numpy row), as float32 without a copy."""
    return np.asarray(embedding, dtype=np.float32)


def _candidates(found: Any) -> list[Candidate]:
    ids = found["ids"][0]
    distances = found["distances"][0]
    documents = found["documents"][0]
    metadatas = found["metadatas"][0]
    out = []
    for photo_id, distance, document, metadata in zip(
        ids, distances, documents, metadatas, strict=True
    ):
        similarity = 1.0 - float(distance)
        out.append(candidate(photo_id, document or "", dict(metadata or {}), similarity))
    return out
