"""Durable record of the library in SQLite: files seen, descriptions written, vectors stored.

Descriptions are the expensive part (a vision-model call each), so each one is committed the
moment it arrives: a crash loses at most the photos being described at that instant.

Paths (`rel_path` columns) are stored losslessly: as TEXT when they are valid UTF-8, else as the
file name's raw bytes in a BLOB (`os.fsencode`), read back with `os.fsdecode` (see `index.library.names`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

from index.errors import disk_full_raised
from index.library.descriptions import DescriptionRow, Tier, best_of, tier_of
from index.library.migrations import SCHEMA_VERSION as SCHEMA_VERSION  # the tests' name
from index.library.migrations import migrate
from index.library.names import is_lossless_text
from index.models import IndexReport, PhotoFile
from index.search.sqlite_files import open_wal

_FEW = 500  # up to this many photo ids are looked up by id, more by one scan


def text_sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


_STEPS_PER_CALL = 10


@dataclass
class SqlWork:
    """SQLite virtual-machine instructions run (to within `_STEPS_PER_CALL`)."""

    steps: int = 0


@dataclass(frozen=True)
class EmbeddedRecord:
    text_sha: str
    model: str
    rel_path: str


@dataclass(frozen=True)
class StoredDescription:
    photo_id: str
    describer_key: str
    description: str

    @property
    def tier(self) -> Tier:
        return tier_of(self.describer_key)


class Catalog:
    """SQLite-backed catalog. Safe to share between threads (one connection, one lock)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        with disk_full_raised(f"the catalog {path}"):
            self._db = open_wal(path, timeout_s=30)
            migrate(self._db, path)
        # Whole-table facts (counts) computed once per state of the catalog: the state is our
        # own writes plus `PRAGMA data_version`, which moves when another process commits.
        self._writes = 0
        self._facts: dict[str, tuple[tuple[int, int], object]] = {}

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, disk_full_raised(f"the catalog {self.path}"), self._db:
            self._writes += 1
            yield self._db

    def _fact(self, name: str, compute: Callable[[], object]) -> object:
        """`compute()` (under the lock), remembered until the catalog changes."""
        with self._lock:
            state = (self._writes, int(self._db.execute("PRAGMA data_version").fetchone()[0]))
            known = self._facts.get(name)
            if known is not None and known[0] == state:
                return known[1]
            value = compute()
            self._facts[name] = (state, value)
            return value

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def work_counted(self) -> Iterator[SqlWork]:
        """Count the SQLite work done inside the block (by any thread): the steps grow with the
        rows read, so a benchmark or a test can show that a request's cost does not grow with
        the library."""
        work = SqlWork()

        def step() -> int:
            work.steps += _STEPS_PER_CALL
            return 0  # go on

        with self._lock:
            self._db.set_progress_handler(step, _STEPS_PER_CALL)
        try:
            yield work
        finally:
            with self._lock:
                self._db.set_progress_handler(None, _STEPS_PER_CALL)

    # --- files -------------------------------------------------------------------------------
    def known_file(self, rel_path: str, size: int, mtime: float) -> PhotoFile | None:
        """The stored record of an unchanged file (same path, size and mtime), else None."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM files WHERE rel_path=? AND size=? AND mtime=?",
                (db_path(rel_path), size, mtime),
            ).fetchone()
        return None if row is None else _row_to_photo(row)

    def photo_ids(self) -> set[str]:
        """Every distinct photo recorded in the library."""
        with self._lock:
            return {str(row[0]) for row in self._db.execute("SELECT DISTINCT photo_id FROM files")}

    def files(self) -> dict[str, str]:
        """rel_path -> photo_id for every file recorded."""
        with self._lock:
            rows = self._db.execute("SELECT rel_path, photo_id FROM files").fetchall()
        return {path_from_db(rel_path): str(photo_id) for rel_path, photo_id in rows}

    def replace_files(self, photos: Iterable[PhotoFile]) -> None:
        """Make the files table exactly the given photos (one transaction)."""
        rows = [_photo_to_row(p) for p in photos]
        with self._tx() as db:
            db.execute("DELETE FROM files")
            db.executemany("INSERT INTO files VALUES (?,?,?,?,?,?,?,?,?)", rows)
            db.execute(  # the hashes of photos that left with their files
                "DELETE FROM perceptual_hashes WHERE photo_id NOT IN (SELECT photo_id FROM files)"
            )

    def photo(self, photo_id: str) -> PhotoFile | None:
        """One file holding this photo (the first by path), or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM files WHERE photo_id=? ORDER BY rel_path LIMIT 1", (photo_id,)
            ).fetchone()
        return None if row is None else _row_to_photo(row)

    def photo_count(self) -> int:
        """Distinct photos recorded (counted once per change of the catalog)."""
        query = "SELECT COUNT(DISTINCT photo_id) FROM files"
        return int(str(self._fact("photo_count", lambda: self._db.execute(query).fetchone()[0])))

    def remove_file(self, rel_path: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM files WHERE rel_path=?", (db_path(rel_path),))

    # --- perceptual hashes (computed by the scan; see index.library.dedup) ---------------------------
    def save_perceptual_hashes(self, hashes: Mapping[str, str]) -> None:
        """Keep photo_id -> perceptual hash (16 hex digits)."""
        with self._tx() as db:
            db.executemany(
                "INSERT OR REPLACE INTO perceptual_hashes VALUES (?,?)", list(hashes.items())
            )

    def perceptual_hashes(self, photo_ids: Iterable[str]) -> dict[str, str]:
        """The kept hashes of those of the photos that have one."""
        wanted = sorted(set(photo_ids))
        found: dict[str, str] = {}
        with self._lock:
            for start in range(0, len(wanted), _FEW):
                few = wanted[start : start + _FEW]
                rows = self._db.execute(
                    "SELECT photo_id, phash FROM perceptual_hashes "
                    f"WHERE photo_id IN ({','.join('?' * len(few))})",
                    few,
                ).fetchall()
                found.update((str(photo_id), str(phash)) for photo_id, phash in rows)
        return found

    # --- descriptions ------------------------------------------------------------------------
    def has_description(self, photo_id: str, describer_key: str) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM descriptions WHERE photo_id=? AND describer_key=?",
                (photo_id, describer_key),
            ).fetchone()
        return row is not None

    def save_description(
        self, photo_id: str, describer_key: str, description: str, *, supersede: bool = False
    ) -> None:
        """Store a description; `supersede` (a redescribe) makes it win over the photo's others."""
        with self._tx() as db:
            if supersede:
                db.execute("UPDATE descriptions SET superseded=1 WHERE photo_id=?", (photo_id,))
            db.execute(
                "INSERT OR REPLACE INTO descriptions "
                "(photo_id, describer_key, description, created_at, superseded) VALUES (?,?,?,?,0)",
                (photo_id, describer_key, description, _now()),
            )

    def description_rows(self, photo_ids: Iterable[str]) -> dict[str, list[DescriptionRow]]:
        """Every stored description of the given photos, oldest first."""
        wanted = set(photo_ids)
        query = (
            "SELECT photo_id, describer_key, description, created_at, superseded FROM descriptions"
        )
        few = sorted(wanted) if len(wanted) <= _FEW else []  # a batch while indexing: ask for it
        if few:
            query += f" WHERE photo_id IN ({','.join('?' * len(few))})"
        with self._lock:
            rows = self._db.execute(query + " ORDER BY rowid", few).fetchall()
        out: dict[str, list[DescriptionRow]] = {}
        for photo_id, key, text, created, superseded in rows:
            if photo_id in wanted:
                row = DescriptionRow(photo_id, key, text, created, bool(superseded))
                out.setdefault(photo_id, []).append(row)
        return out

    def best_descriptions(self, photo_ids: Iterable[str]) -> dict[str, StoredDescription]:
        """For each photo, the description that counts (see `index.library.descriptions`)."""
        best: dict[str, StoredDescription] = {}
        for photo_id, rows in self.description_rows(photo_ids).items():
            row = best_of(rows)
            if row is not None:
                best[photo_id] = StoredDescription(photo_id, row.describer_key, row.description)
        return best

    def tier_counts(self, photo_ids: Iterable[str]) -> dict[Tier | None, int]:
        """How many of the photos are described at each tier (None: not described yet)."""
        wanted = set(photo_ids)
        best = self.best_descriptions(wanted)
        counts: dict[Tier | None, int] = {}
        for photo_id in wanted:
            stored = best.get(photo_id)
            tier = stored.tier if stored else None
            counts[tier] = counts.get(tier, 0) + 1
        return counts

    def library_tier_counts(self) -> dict[Tier | None, int]:
        """`tier_counts` of every photo in the library, counted once per change of the catalog
        (a status poll reads it, not every description row)."""
        counts = self._fact("library_tier_counts", lambda: self.tier_counts(self.photo_ids()))
        return dict(cast("dict[Tier | None, int]", counts))

    def latest_description(self, photo_id: str) -> StoredDescription | None:
        """The photo's most recent description (whichever describer wrote it): one lookup."""
        with self._lock:
            row = self._db.execute(
                "SELECT photo_id, describer_key, description FROM descriptions WHERE photo_id=? "
                "ORDER BY created_at DESC, rowid DESC LIMIT 1",
                (photo_id,),
            ).fetchone()
        return None if row is None else StoredDescription(str(row[0]), str(row[1]), str(row[2]))

    def latest_descriptions(self, photo_ids: Iterable[str]) -> dict[str, StoredDescription]:
        """For each photo, its most recent description (whichever describer wrote it)."""
        wanted = set(photo_ids)
        with self._lock:
            rows = self._db.execute(
                "SELECT photo_id, describer_key, description FROM descriptions "
                "ORDER BY created_at, rowid"
            ).fetchall()
        latest: dict[str, StoredDescription] = {}
        for photo_id, key, text in rows:
            if photo_id in wanted:
                latest[photo_id] = StoredDescription(photo_id, key, text)
        return latest

    # --- embedded ----------------------------------------------------------------------------
    def embedded(self) -> dict[str, EmbeddedRecord]:
        """What the vector store holds for each photo, as we last wrote it."""
        with self._lock:
            rows = self._db.execute("SELECT photo_id, text_sha, model, rel_path FROM embedded")
            found = rows.fetchall()
        return {row[0]: EmbeddedRecord(row[1], row[2], path_from_db(row[3])) for row in found}

    def any_embedded(self) -> bool:
        """Whether the vector store should hold any photo, as we last wrote it: one lookup."""
        with self._lock:
            return self._db.execute("SELECT 1 FROM embedded LIMIT 1").fetchone() is not None

    def is_embedded(self, photo_id: str) -> bool:
        """Whether the vector store holds the photo, as we last wrote it: one lookup."""
        with self._lock:
            row = self._db.execute("SELECT 1 FROM embedded WHERE photo_id=?", (photo_id,))
            return row.fetchone() is not None

    def mark_embedded(self, items: Iterable[tuple[str, str, str]], model: str) -> None:
        """Record (photo_id, embedded text, rel_path) triples as stored with `model`."""
        rows = [(photo_id, text_sha(text), model, db_path(rel)) for photo_id, text, rel in items]
        with self._tx() as db:
            db.executemany("INSERT OR REPLACE INTO embedded VALUES (?,?,?,?)", rows)

    def move_embedded(self, photo_id: str, rel_path: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE embedded SET rel_path=? WHERE photo_id=?", (db_path(rel_path), photo_id)
            )

    def forget_embedded(self, photo_ids: Iterable[str] | None = None) -> None:
        """Forget that photos were embedded (all of them when None)."""
        with self._tx() as db:
            if photo_ids is None:
                db.execute("DELETE FROM embedded")
            else:
                db.executemany("DELETE FROM embedded WHERE photo_id=?", [(p,) for p in photo_ids])

    # --- excluded (deleted by a user: kept out of the index even while the file remains) -----
    def exclude_photo(self, photo_id: str) -> list[str]:
        """Keep a photo out of the index for good; returns the paths it was recorded at."""
        with self._tx() as db:
            rows = db.execute("SELECT rel_path FROM files WHERE photo_id=?", (photo_id,))
            paths = sorted(path_from_db(row[0]) for row in rows.fetchall())
            db.execute("INSERT OR REPLACE INTO excluded VALUES (?, ?)", (photo_id, _now()))
            db.execute("DELETE FROM files WHERE photo_id=?", (photo_id,))
            db.execute("DELETE FROM embedded WHERE photo_id=?", (photo_id,))
        return paths

    def unexclude_photo(self, photo_id: str) -> bool:
        """Let an excluded photo back in (e.g. the user uploads it again); True if it was out."""
        with self._tx() as db:
            cursor = db.execute("DELETE FROM excluded WHERE photo_id=?", (photo_id,))
            return cursor.rowcount > 0

    def excluded_ids(self) -> set[str]:
        with self._lock:
            return {str(row[0]) for row in self._db.execute("SELECT photo_id FROM excluded")}

    # --- visual_embedded (photos whose pixels are in the visual collection) ----------------
    def visual_embedded(self) -> dict[str, str]:
        """photo_id -> the visual model identity its vector was made with."""
        with self._lock:
            rows = self._db.execute("SELECT photo_id, model FROM visual_embedded").fetchall()
        return {str(photo_id): str(model) for photo_id, model in rows}

    def mark_visual_embedded(self, photo_ids: Iterable[str], model: str) -> None:
        rows = [(photo_id, model) for photo_id in photo_ids]
        with self._tx() as db:
            db.executemany("INSERT OR REPLACE INTO visual_embedded VALUES (?,?)", rows)

    def forget_visual_embedded(self, photo_ids: Iterable[str] | None = None) -> None:
        """Forget that photos have a visual vector (all of them when None)."""
        with self._tx() as db:
            if photo_ids is None:
                db.execute("DELETE FROM visual_embedded")
            else:
                rows = [(p,) for p in photo_ids]
                db.executemany("DELETE FROM visual_embedded WHERE photo_id=?", rows)

    # --- runs --------------------------------------------------------------------------------
    def start_run(self, mode: str) -> int:
        with self._tx() as db:
            cursor = db.execute("INSERT INTO runs (started_at, mode) VALUES (?, ?)", (_now(), mode))
            return int(cursor.lastrowid or 0)

    def finish_run(self, run_id: int, report: IndexReport) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET finished_at=?, report=? WHERE id=?",
                (_now(), json.dumps(report.to_dict(), ensure_ascii=False), run_id),
            )

    def data_version(self) -> int:
        """Changes whenever another connection (another process) has committed a change."""
        with self._lock:
            return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def last_finished_run(self) -> datetime | None:
        query = "SELECT MAX(finished_at) FROM runs"
        found = self._fact("last_finished_run", lambda: self._db.execute(query).fetchone()[0])
        return datetime.fromisoformat(str(found)) if found else None


def db_path(rel_path: str) -> str | bytes:
    """How a path is stored: the text itself, or its raw bytes when it is not valid UTF-8."""
    return rel_path if is_lossless_text(rel_path) else os.fsencode(rel_path)


def path_from_db(value: object) -> str:
    """The path as Python names the file again (surrogate-escaped when not UTF-8)."""
    return os.fsdecode(value) if isinstance(value, bytes) else str(value)


def _photo_to_row(p: PhotoFile) -> tuple[object, ...]:
    taken = p.taken_at.isoformat() if p.taken_at else None
    return (
        db_path(p.rel_path),
        p.photo_id,
        p.size,
        p.mtime,
        p.width,
        p.height,
        taken,
        p.gps_lat,
        p.gps_lon,
    )


def _row_to_photo(row: tuple[object, ...]) -> PhotoFile:
    stored_path, photo_id, size, mtime, width, height, taken, lat, lon = row
    rel_path = path_from_db(stored_path)
    return PhotoFile(
        photo_id=str(photo_id),
        path=Path(rel_path),  # relative here; the indexer resolves it against the library
        rel_path=rel_path,
        size=int(str(size)),
        mtime=float(str(mtime)),
        width=int(str(width)),
        height=int(str(height)),
        taken_at=datetime.fromisoformat(str(taken)) if taken else None,
        gps_lat=float(str(lat)) if lat is not None else None,
        gps_lon=float(str(lon)) if lon is not None else None,
    )
