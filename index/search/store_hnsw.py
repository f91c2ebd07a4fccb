"""A local vector store for large libraries: an HNSW graph (hnswlib) in memory over SQLite rows
on disk, behind the `VectorStore` port (`PEITU_STORE__BACKEND=hnsw`).

SQLite (`<data>/vectors/vectors.sqlite3`, WAL) holds the truth: one row per photo with its
vector, document and metadata, plus the columns the filters read (`taken_ts`, the place names).
Every write is one transaction that also advances its collection's `seq`, so nothing written is
lost when a process dies. The graph is built from those rows and saved beside them
(`<collection id>.<seq>.hnsw` and its facts, at the end of each index job and as it grows)
so that opening a million photos reads one file instead of building a graph; rows written
after that `seq` (by this or another process) are added on the next read, deletions likewise.
A query is then one graph search plus one `WHERE label IN (…)` lookup of the hits: nothing in
proportion to the library. The filter columns are also kept in memory per label (`_Facets`),
so a time or place filter is a mask computed in milliseconds; the search then depends on how
many photos it keeps (`_filtered_search`).

A rebuild fills a second collection and takes the name in one transaction (`replace_with`), so
there is no half-done swap to recover from; the retired rows are deleted afterwards.
Chroma (`index.search.store`) stays the default: it is the one to use with a Chroma server.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np

from index.errors import IndexMismatch, disk_full_raised
from index.models import Candidate, QueryFilters
from index.ports import StoredVector, Vectors, VectorStore, sampled
from index.search.exact import (
    EXACT_UP_TO,
    PLACE_COLUMNS,
    Facets,
    FilterColumns,
    filter_columns,
)
from index.search.sqlite_files import open_wal
from index.search.stored import candidate, identity_mismatch, scalar_metadata, vectors_of
from index.understanding.filters import has_place, has_time

log = logging.getLogger(__name__)

REBUILD_SUFFIX = "__rebuild"
RETIRED_SUFFIX = "__retired-"
PARTIAL_SUFFIX = ".partial"  # a graph being saved: `<collection>.<seq>.<pid>.partial`
_QUIET_S = 60.0  # a save writes all the time: a part file quiet this long is not being written
_ABANDONED_S = 600.0


@dataclass(frozen=True)
class HnswParams:
    """The graph's build and search parameters (hnswlib's names)."""

    m: int = 16
    ef_construction: int = 100
    ef_search: int | None = None  # None: `auto_ef_search` of the collection's size
    exact_below: int = 2_000  # a filter keeping fewer photos than this is searched exactly
    post_filter_share: float = 0.05  # one keeping this share or more filters a wider search

    def ef_for(self, photos: int) -> int:
        return self.ef_search or auto_ef_search(photos)


def auto_ef_search(photos: int) -> int:
    """600, or one per 400 photos above 240,000 (2,500 at a million), at most 5,000.

    Measured with bench/bench_scale.py (M 16, ef_construction 100, real caption vectors with
    many near-duplicates): recall@20 against exact search 0.9995 at 100k with 600; at 1M 0.978
    with 600, 0.989 with 1,200, 0.993 with 2,500 (2.1 ms a query), 0.995 with 5,000."""
    return min(5_000, max(600, photos // 400))


_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS collections (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, identity TEXT NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS vectors (
    label INTEGER PRIMARY KEY AUTOINCREMENT, collection TEXT NOT NULL, photo_id TEXT NOT NULL,
    vector BLOB NOT NULL, document TEXT NOT NULL, metadata TEXT NOT NULL, taken_ts REAL,
    {", ".join(f"{c} TEXT" for c in PLACE_COLUMNS)}, seq INTEGER NOT NULL,
    UNIQUE (collection, photo_id));
CREATE INDEX IF NOT EXISTS vectors_by_seq ON vectors (collection, seq);
CREATE TABLE IF NOT EXISTS deleted (collection TEXT NOT NULL, label INTEGER NOT NULL,
    seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS deleted_by_seq ON deleted (collection, seq);
"""


class _Graph:
    """One collection's HNSW graph as of `seq`, and the facets of the photos it holds."""

    def __init__(
        self, index: hnswlib.Index, params: HnswParams, seq: int = 0, *, exact: bool = True
    ):
        """`exact`: keep the vectors beside the facets too (a small library, searched exactly
        while it has at most `EXACT_UP_TO` photos)."""
        self.index = index
        self.params = params
        self.seq = seq
        self.facets = Facets(index.dim if exact else None)
        self._ef = 0

    @property
    def live(self) -> int:
        """Photos in the graph, not counting those marked deleted."""
        return self.facets.count

    def set_ef(self) -> None:
        """The search breadth for the graph's size now (`HnswParams.ef_for`)."""
        ef = self.params.ef_for(self.live)
        if ef != self._ef:
            self.index.set_ef(ef)
            self._ef = ef

    @classmethod
    def empty(cls, dimension: int, params: HnswParams) -> _Graph:
        index = hnswlib.Index(space="cosine", dim=dimension)
        index.init_index(
            max_elements=1024,
            M=params.m,
            ef_construction=params.ef_construction,
            allow_replace_deleted=True,
        )
        return cls(index, params)

    @classmethod
    def load(
        cls, path: Path, dimension: int, params: HnswParams, seq: int, *, exact: bool
    ) -> _Graph:
        """A saved graph (its facets still to be read); RuntimeError when hnswlib cannot."""
        index = hnswlib.Index(space="cosine", dim=dimension)
        index.load_index(str(path), allow_replace_deleted=True)
        return cls(index, params, seq, exact=exact)

    def add(
        self, labels: Sequence[int], vectors: Vectors, columns: Sequence[FilterColumns]
    ) -> None:
        """Add these rows, or replace those whose label the graph holds already."""
        needed = self.index.element_count + len(labels)
        if needed > self.index.max_elements:
            self.index.resize_index(max(needed, 2 * self.index.max_elements))
        self.index.add_items(vectors, np.asarray(labels, dtype=np.int64), num_threads=-1)
        self.facets.set(labels, columns, vectors)
        if self.facets.count > EXACT_UP_TO:
            self.facets.drop_vectors()  # from now on the graph is searched

    def remove(self, labels: Iterable[int]) -> None:
        gone = []
        for label in labels:
            try:
                self.index.mark_deleted(label)
            except RuntimeError:  # not in the graph (deleted already, or never added)
                continue
            gone.append(label)
        self.facets.remove(gone)


@dataclass(frozen=True)
class _Write:
    collection: str
    graph: _Graph
    seq: int


class HnswStore(VectorStore):
    """One named collection in a folder's `vectors.sqlite3`, with its graph in memory.

    Stores opened on the same folder (in this process or another) see each other's writes at
    their next read: each read first applies the rows written since its graph's `seq`."""

    def __init__(
        self,
        folder: Path,
        name: str,
        model: str,
        dimension: int,
        document_encoding: str,
        params: HnswParams | None = None,
        *,
        identity: dict[str, Any] | None = None,
    ) -> None:
        """`identity`: recorded instead of (model, dimension, document encoding): the visual
        collection's (`index.visual.store.visual_identity`)."""
        self._folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._name = name
        self._dimension = dimension
        self._params = params or HnswParams()
        self._model, self._encoding = model, document_encoding
        self._identity: dict[str, Any] = identity or {
            "embedding_model": model,
            "dimension": dimension,
            "document_encoding": document_encoding,
        }
        self._identity_text = json.dumps(self._identity, sort_keys=True)  # as stored
        with disk_full_raised(f"the vectors in {folder}"):
            self._db = _connect(folder / "vectors.sqlite3")
        self._lock = threading.RLock()
        self._collection: str | None = None  # id of the collection the graph is of
        self._graph: _Graph | None = None
        self._unsaved = 0

    # --- identity -------------------------------------------------------------------------
    @property
    def mismatch(self) -> IndexMismatch | None:
        with self._lock:
            return self._mismatch(self._row())

    def _mismatch(self, found: tuple[str, str, int] | None) -> IndexMismatch | None:
        if found is None or found[1] == self._identity_text:
            return None
        return identity_mismatch(json.loads(found[1]), self._identity)

    def _row(self) -> tuple[str, str, int] | None:
        """(id, identity, seq) of the collection holding our name, or None."""
        row = self._db.execute(
            "SELECT id, identity, seq FROM collections WHERE name = ?", (self._name,)
        ).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def _current(self) -> _Graph | None:
        """The graph brought up to date with the disk, or None while there is no collection;
        raises the identity problem. Call with the lock held."""
        found = self._row()
        mismatch = self._mismatch(found)
        if mismatch is not None:
            raise mismatch
        if found is None:
            self._collection, self._graph = None, None
            return None
        collection, _, seq = found
        if collection != self._collection or self._graph is None:
            self._collection, self._graph = collection, self._open_graph(collection)
        self._catch_up(collection, self._graph, seq)
        return self._graph

    # --- writes ---------------------------------------------------------------------------
    def upsert(self, items: Sequence[StoredVector]) -> None:
        if not items:
            return
        vectors = vectors_of(items, self._dimension)
        with self._lock, self._writing() as write:
            assert write is not None  # made when missing
            collection, graph, seq = write.collection, write.graph, write.seq
            self._db.executemany(
                "INSERT INTO vectors (collection, photo_id, vector, document, metadata, "
                f"taken_ts, {', '.join(PLACE_COLUMNS)}, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (collection, photo_id) DO UPDATE SET vector = excluded.vector, "
                "document = excluded.document, metadata = excluded.metadata, "
                "taken_ts = excluded.taken_ts, "
                + ", ".join(f"{c} = excluded.{c}" for c in PLACE_COLUMNS)
                + ", seq = excluded.seq",
                [
                    _row_of(collection, item, vector, seq)
                    for item, vector in zip(items, vectors, strict=True)
                ],
            )
            labels = self._labels(collection, [i.photo_id for i in items])
            columns = [filter_columns(scalar_metadata(i.metadata)) for i in items]
            graph.add([labels[i.photo_id] for i in items], vectors, columns)
            self._unsaved += len(items)
        self._save_if_due()

    def set_metadata(self, photo_id: str, metadata: dict[str, Any]) -> None:
        clean = scalar_metadata(metadata)
        with self._lock, self._writing(create=False) as write:
            if write is None:
                return
            self._db.execute(
                f"UPDATE vectors SET metadata = ?, taken_ts = ?, "
                f"{', '.join(f'{c} = ?' for c in PLACE_COLUMNS)}, seq = ? "
                "WHERE collection = ? AND photo_id = ?",
                (
                    json.dumps(clean, ensure_ascii=False),
                    *filter_columns(clean),
                    write.seq,
                    write.collection,
                    photo_id,
                ),
            )
            label = self._labels(write.collection, [photo_id]).get(photo_id)
            if label is not None:
                write.graph.facets.set([label], [filter_columns(clean)])

    def delete(self, photo_ids: Sequence[str]) -> None:
        if not photo_ids:
            return
        with self._lock, self._writing(create=False) as write:
            if write is None:
                return
            labels = list(self._labels(write.collection, photo_ids).values())
            self._db.executemany(
                "DELETE FROM vectors WHERE label = ?", [(label,) for label in labels]
            )
            self._db.executemany(
                "INSERT INTO deleted (collection, label, seq) VALUES (?, ?, ?)",
                [(write.collection, label, write.seq) for label in labels],
            )
            write.graph.remove(labels)

    @contextmanager
    def _writing(self, create: bool = True) -> Iterator[_Write | None]:
        """One write transaction on our collection (made when `create` and missing), with the
        graph first brought up to date and the collection's next `seq`; None (and nothing to
        write to) when there is no collection and `create` is false."""
        with self._transaction():
            graph = self._current()
            if graph is None and create:
                self._make_collection(self._name, self._identity)
                graph = self._current()
            if graph is None or self._collection is None:
                yield None
                return
            seq = graph.seq + 1
            self._db.execute("UPDATE collections SET seq = ? WHERE id = ?", (seq, self._collection))
            yield _Write(self._collection, graph, seq)
            graph.seq = seq

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        with disk_full_raised(f"the vectors in {self._folder}"), self._rolled_back_on_error():
            yield

    @contextmanager
    def _rolled_back_on_error(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")  # no other writer until COMMIT: seq stays ours
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self._collection, self._graph = None, None  # the graph may hold what was undone
            raise

    def _make_collection(self, name: str, identity: dict[str, Any]) -> str:
        collection = uuid.uuid4().hex
        self._db.execute(
            "INSERT INTO collections (id, name, identity) VALUES (?, ?, ?)",
            (collection, name, json.dumps(identity, sort_keys=True)),  # = `_identity_text`
        )
        return collection

    def _labels(self, collection: str, photo_ids: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for start in range(0, len(photo_ids), 500):
            chunk = list(photo_ids[start : start + 500])
            marks = ", ".join("?" * len(chunk))
            found.update(
                self._db.execute(
                    f"SELECT photo_id, label FROM vectors WHERE collection = ? AND photo_id IN ({marks})",
                    [collection, *chunk],
                ).fetchall()
            )
        return found

    # --- reads ----------------------------------------------------------------------------
    def query(
        self, vector: Sequence[float], k: int, filters: QueryFilters | None = None
    ) -> list[Candidate]:
        """The k nearest photos among those the filters keep: one graph search (or, for a
        filter keeping few photos, an exact search among them) and one lookup of the hits."""
        if k <= 0:
            return []
        query = np.asarray(vector, dtype=np.float32)
        with self._lock:
            graph = self._current()
            if graph is None or graph.live == 0 or self._collection is None:
                return []
            return self._candidates(_filtered_search(graph, query, k, filters, self._params))

    def _candidates(self, hits: list[tuple[int, float]]) -> list[Candidate]:
        if not hits:
            return []
        marks = ", ".join("?" * len(hits))
        rows = self._db.execute(
            f"SELECT label, photo_id, document, metadata FROM vectors WHERE label IN ({marks})",
            [label for label, _ in hits],
        )
        found: dict[int, tuple[str, str, str]] = {row[0]: (row[1], row[2], row[3]) for row in rows}
        out = []
        for label, similarity in hits:
            if label in found:  # else deleted by another process since the search
                photo_id, document, metadata = found[label]
                out.append(candidate(photo_id, document, json.loads(metadata), similarity))
        return out

    def ids(self) -> set[str]:
        with self._lock:
            if self._current() is None:
                return set()
            rows = self._db.execute(
                "SELECT photo_id FROM vectors WHERE collection = ?", (self._collection,)
            )
            return {row[0] for row in rows}

    def count(self) -> int:
        """Photos in the collection: kept by the graph as writes arrive, never counted; a
        store that has not loaded its graph (`peitu status`) counts the rows instead."""
        with self._lock:
            if self._graph is None:
                return self._count_rows()
            graph = self._current()
            return 0 if graph is None else graph.live

    def _count_rows(self) -> int:
        found = self._row()
        mismatch = self._mismatch(found)
        if mismatch is not None:
            raise mismatch
        if found is None:
            return 0
        row = self._db.execute("SELECT COUNT(*) FROM vectors WHERE collection = ?", (found[0],))
        return int(row.fetchone()[0])

    def get(self, photo_ids: Sequence[str]) -> list[StoredVector]:
        rows = self._select(photo_ids, "photo_id, vector, document, metadata")
        return [
            StoredVector(i, np.frombuffer(v, dtype=np.float32), d, json.loads(m))
            for i, v, d, m in rows
        ]

    def sample(self, size: int, seed: int = 0) -> list[list[float]]:
        """As `VectorStore.sample` chooses them, reading the vectors alone (a cold query's
        calibration reads 512 of them)."""
        rows = self._select(sampled(self.ids(), size, seed), "vector")
        return [np.frombuffer(row[0], dtype=np.float32).tolist() for row in rows]

    def _select(self, photo_ids: Sequence[str], columns: str) -> list[tuple[Any, ...]]:
        """These columns of the rows of these photos (those stored), 500 ids a statement."""
        with self._lock:
            if not photo_ids or self._current() is None:
                return []
            found: list[tuple[Any, ...]] = []
            for start in range(0, len(photo_ids), 500):
                chunk = list(photo_ids[start : start + 500])
                marks = ", ".join("?" * len(chunk))
                found += self._db.execute(
                    f"SELECT {columns} FROM vectors WHERE collection = ? AND photo_id IN ({marks})",
                    [self._collection, *chunk],
                ).fetchall()
            return found

    # --- other processes, rebuilds --------------------------------------------------------
    def refresh(self) -> None:
        return None  # every read catches up with the disk by itself

    def recover(self) -> None:
        """Clean up after processes that died: delete the rows of collections retired by a swap
        (the swap itself is one transaction: never half done) and of a rebuild that never
        finished, and graph files left half saved. For the holder of the index lock."""
        with self._lock:
            retired = self._db.execute(
                "SELECT id FROM collections WHERE name LIKE ?", (self._name + RETIRED_SUFFIX + "%",)
            ).fetchall()
            for (collection,) in retired:
                self._drop(collection)
            unfinished = self._db.execute(
                "SELECT id FROM collections WHERE name = ?", (self._name + REBUILD_SUFFIX,)
            ).fetchone()
            if unfinished is not None:
                log.warning("removing the vectors of a rebuild that stopped before it was done")
                self._drop(unfinished[0])
        for partial in self._folder.glob(f"*{PARTIAL_SUFFIX}"):
            if _abandoned(partial):
                log.warning("removing %s, a search graph left half saved", partial)
                partial.unlink(missing_ok=True)

    def begin_rebuild(self) -> HnswStore:
        rebuilt = HnswStore(
            self._folder,
            self._name + REBUILD_SUFFIX,
            self._model,
            self._dimension,
            self._encoding,
            self._params,
            identity=self._identity,
        )
        with self._lock:
            left_over = rebuilt._row()
            if left_over is not None:
                self._drop(left_over[0])
            with self._transaction():
                self._make_collection(rebuilt._name, self._identity)
        return rebuilt

    def replace_with(self, rebuilt: HnswStore) -> None:
        """The rebuilt collection takes our name in one transaction; the old rows go after."""
        with self._lock, rebuilt._lock:
            graph = rebuilt._current()
            with self._transaction():
                old = self._row()
                if old is not None:
                    retired = self._name + RETIRED_SUFFIX + old[0]
                    self._db.execute(
                        "UPDATE collections SET name = ? WHERE id = ?", (retired, old[0])
                    )
                self._db.execute(
                    "UPDATE collections SET name = ? WHERE id = ?",
                    (self._name, rebuilt._collection),
                )
            self._collection, self._graph = rebuilt._collection, graph
            rebuilt._collection, rebuilt._graph = None, None
            if graph is not None and self._collection is not None:
                self._save(self._collection, graph)
            if old is not None:
                self._drop(old[0])

    def discard_rebuild(self, rebuilt: HnswStore) -> None:
        with self._lock:
            found = rebuilt._row()
            if found is not None:
                self._drop(found[0])
            rebuilt._collection, rebuilt._graph = None, None

    def _drop(self, collection: str) -> None:
        with self._transaction():
            for table in ("vectors", "deleted"):
                self._db.execute(f"DELETE FROM {table} WHERE collection = ?", (collection,))
            self._db.execute("DELETE FROM collections WHERE id = ?", (collection,))
        for path in self._folder.glob(f"{collection}.*"):
            path.unlink(missing_ok=True)

    # --- the graph on disk ----------------------------------------------------------------
    # Saved as a pair per seq, `<collection>.<seq>.hnsw` then its facts `<collection>.<seq>.json`
    # (seq, bytes): a pair whose facts exist is whole, and a reader never sees a graph
    # and facts of two different saves. Older pairs are removed after a save.
    def _saved(self, collection: str) -> list[tuple[int, Path]]:
        """(seq, facts file) of the collection's saved graphs, newest first."""
        found = []
        for facts in self._folder.glob(f"{collection}.*.json"):
            seq = facts.name.removeprefix(f"{collection}.").removesuffix(".json")
            if seq.isdigit():
                found.append((int(seq), facts))
        return sorted(found, reverse=True)

    def _open_graph(self, collection: str) -> _Graph:
        """The collection's newest saved graph that reads whole, else a new empty graph
        (either is then brought up to date from the rows)."""
        for seq, facts in self._saved(collection):
            loaded = self._load_saved(facts.with_suffix(".hnsw"), facts)
            if loaded is not None:
                self._read_facets(collection, loaded, seq)
                return loaded
        return _Graph.empty(self._dimension, self._params)

    def _load_saved(self, path: Path, facts_file: Path) -> _Graph | None:
        """The saved graph, keeping the vectors beside it (read with the facets) when it is small
        enough to be searched exactly."""
        try:
            facts = json.loads(facts_file.read_text(encoding="utf-8"))
            whole = path.stat().st_size == facts["bytes"]  # hnswlib must not read a cut file
        except (OSError, ValueError, KeyError):
            return None  # removed by a newer save meanwhile, or not ours
        if not whole:
            log.warning("the saved search graph %s is unreadable (cut short); rebuilding it", path)
            return None
        try:
            graph = _Graph.load(path, self._dimension, self._params, facts["seq"], exact=True)
            if graph.index.element_count > EXACT_UP_TO:
                graph.facets.drop_vectors()
            return graph
        except RuntimeError as error:  # a damaged cache: rebuilt from the rows
            log.warning("the saved search graph %s is unreadable (%s); rebuilding it", path, error)
            return None

    def _read_facets(self, collection: str, graph: _Graph, seq: int) -> None:
        """The filter columns of the rows a saved graph holds (those up to its `seq`), and their
        vectors when the graph keeps them."""
        vectors = graph.facets.vectors is not None
        rows = self._db.execute(
            f"SELECT label, taken_ts, {', '.join(PLACE_COLUMNS)}"
            f"{', vector' if vectors else ''} FROM vectors WHERE collection = ? AND seq <= ?",
            (collection, seq),
        )
        while batch := rows.fetchmany(50_000):
            labels = [row[0] for row in batch]
            columns = [(row[1], row[2], row[3], row[4]) for row in batch]
            rows_of = self._vectors_of(batch, 5) if vectors else None
            graph.facets.set(labels, columns, rows_of)

    def _vectors_of(self, rows: Sequence[Sequence[Any]], column: int) -> Vectors:
        blob = b"".join(row[column] for row in rows)
        return np.frombuffer(blob, dtype=np.float32).reshape(len(rows), self._dimension)

    def _catch_up(self, collection: str, graph: _Graph, seq: int) -> None:
        """Apply the rows written and deleted after the graph's `seq`, up to `seq`."""
        if seq <= graph.seq:
            return
        behind = graph.seq
        gone = self._db.execute(
            "SELECT label FROM deleted WHERE collection = ? AND seq > ?", (collection, behind)
        )
        graph.remove(row[0] for row in gone)
        rows = self._db.execute(
            f"SELECT label, vector, taken_ts, {', '.join(PLACE_COLUMNS)} FROM vectors "
            "WHERE collection = ? AND seq > ? ORDER BY label",
            (collection, behind),
        )
        added = 0
        while batch := rows.fetchmany(5_000):
            labels = [row[0] for row in batch]
            columns = [(row[2], row[3], row[4], row[5]) for row in batch]
            graph.add(labels, self._vectors_of(batch, 1), columns)
            added += len(batch)
        graph.seq = seq
        self._unsaved += added
        if added >= 10_000:
            log.info("the search graph took in %d photos written since it was saved", added)
        if self._unsaved >= _save_after(graph):  # the next process to open it reads this
            self._save(collection, graph)

    def _save_if_due(self) -> None:
        """Save the graph when a quarter of it (and at least 20,000 rows) is newer than the
        saved one: opening then reads the file and adds little."""
        with self._lock:
            graph, collection = self._graph, self._collection
            if graph is None or collection is None:
                return
            if self._unsaved >= _save_after(graph):
                self._save(collection, graph)

    def warm(self) -> None:
        """Read the graph now (and, for a small library, the vectors beside it)."""
        with self._lock:
            self._current()

    def flush(self) -> None:
        """Save the graph now if anything is newer than the saved one (end of an index job)."""
        with self._lock:
            if self._graph is not None and self._collection is not None and self._unsaved:
                self._save(self._collection, self._graph)

    def _save(self, collection: str, graph: _Graph) -> None:
        stem = self._folder / f"{collection}.{graph.seq}"
        partial = stem.with_name(f"{stem.name}.{os.getpid()}{PARTIAL_SUFFIX}")
        try:
            with disk_full_raised(f"the search graph in {self._folder}"):
                graph.index.save_index(str(partial))
                facts = {"seq": graph.seq, "bytes": partial.stat().st_size}
                os.replace(partial, stem.with_name(stem.name + ".hnsw"))
                partial.write_text(json.dumps(facts), encoding="utf-8")
                os.replace(partial, stem.with_name(stem.name + ".json"))  # the facts last: whole
        finally:
            partial.unlink(missing_ok=True)  # a save cut short (no room) leaves no part behind
        self._unsaved = 0
        for seq, older in self._saved(collection):
            if seq < graph.seq:
                older.unlink(missing_ok=True)  # facts first: never a pair without its graph
                older.with_suffix(".hnsw").unlink(missing_ok=True)


def _abandoned(partial: Path, now: float | None = None) -> bool:
    """Whether a graph file being saved (`<collection>.<seq>.<pid>.partial`) was left behind:
    not written to for a minute by a process that is gone, or for ten minutes by anyone (a
    process in another container may have the pid of one here)."""
    try:
        quiet_s = (now or time.time()) - partial.stat().st_mtime
    except OSError:
        return False
    pid = partial.name.removesuffix(PARTIAL_SUFFIX).rpartition(".")[2]
    gone = not pid.isdigit() or not _alive(int(pid))
    return quiet_s > _ABANDONED_S or (gone and quiet_s > _QUIET_S)


def _alive(pid: int) -> bool:
    """Whether another process has this pid (this one's own saves write while they run)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _save_after(graph: _Graph) -> int:
    """Rows newer than the saved graph that make it worth saving again: a quarter of it, and
    at least 20,000 (a save of a million photos writes 2 GB)."""
    return max(20_000, graph.live // 4)


def _connect(path: Path) -> sqlite3.Connection:
    db = open_wal(path, timeout_s=60, isolation_level=None)
    db.executescript(_SCHEMA)
    return db


def _filtered_search(
    graph: _Graph, query: np.ndarray, k: int, filters: QueryFilters | None, params: HnswParams
) -> list[tuple[int, float]]:
    """(label, cosine) of the k nearest photos the filters keep, nearest first. A small
    library (its vectors kept beside the graph) is compared one by one; in a large one, a
    filter keeping few photos compares them one by one, one keeping many (a year of six) asks
    the graph for more neighbours and keeps the matching ones, one in between searches the graph
    among the kept photos only."""
    if graph.facets.vectors is not None:
        return graph.facets.nearest(query, k, filters)
    if filters is None or (has_time(filters), has_place(filters)) == (False, False):
        return _search(graph, query, k, None)
    mask = graph.facets.mask(filters)
    kept = int(np.count_nonzero(mask))
    if kept == 0:
        return []
    if kept < params.exact_below:
        return _exact(graph, query, np.flatnonzero(mask).tolist(), k)
    if kept >= params.post_filter_share * graph.live:
        return _post_filtered(graph, query, k, mask, kept)
    return _search(graph, query, k, set(np.flatnonzero(mask).tolist()))


def _post_filtered(
    graph: _Graph, query: np.ndarray, k: int, mask: np.ndarray, kept: int
) -> list[tuple[int, float]]:
    """The k nearest matching photos among a widening search's neighbours: twice as many as
    the kept share predicts, four times more while too few of them match."""
    wanted = min(graph.live, 2 * k * graph.live // kept + k)
    while True:
        hits = _search(graph, query, wanted, None)
        matching = [(label, cosine) for label, cosine in hits if mask[label]]
        if len(matching) >= k or wanted >= graph.live:
            return matching[:k]
        wanted = min(graph.live, 4 * wanted)


def _search(
    graph: _Graph, query: np.ndarray, k: int, allowed: set[int] | None
) -> list[tuple[int, float]]:
    """(label, cosine) of the k nearest in the graph (among `allowed`), nearest first."""
    k = min(k, graph.live if allowed is None else len(allowed))
    keep = None if allowed is None else allowed.__contains__
    graph.set_ef()
    while k > 0:
        try:
            labels, distances = graph.index.knn_query(query, k=k, num_threads=1, filter=keep)
        except RuntimeError:  # fewer than k reachable (deletions, a narrow filter)
            k //= 2
            continue
        return [(int(x), 1.0 - float(d)) for x, d in zip(labels[0], distances[0], strict=True)]
    return []


def _exact(graph: _Graph, query: np.ndarray, allowed: list[int], k: int) -> list[tuple[int, float]]:
    """(label, cosine) of the k nearest among `allowed`, compared one by one."""
    if not allowed:
        return []
    vectors = np.asarray(graph.index.get_items(allowed), dtype=np.float32)
    unit = query / max(float(np.linalg.norm(query)), 1e-12)
    norms = np.maximum(np.linalg.norm(vectors, axis=1), 1e-12)  # kept as given, or unit
    cosines = (vectors @ unit) / norms
    best = np.argsort(-cosines, kind="stable")[:k]
    return [(allowed[i], float(cosines[i])) for i in best]


def _row_of(collection: str, item: StoredVector, vector: np.ndarray, seq: int) -> tuple[Any, ...]:
    clean = scalar_metadata(item.metadata)
    return (
        collection,
        item.photo_id,
        vector.astype(np.float32).tobytes(),
        item.document,
        json.dumps(clean, ensure_ascii=False),
        *filter_columns(clean),
        seq,
    )
