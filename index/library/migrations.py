"""The catalog's schema versions, and how a catalog is brought to the newest one.

Two processes may open one catalog at the same instant (`peitu serve` and a cron'd `peitu index`
after an upgrade, a server's scheduled job and a CLI run on a new data folder), and an older and
a newer PeiTu may share one data folder. So `migrate` takes SQLite's write lock before it reads
the schema version (`BEGIN IMMEDIATE`), reads it again inside, and applies the missing steps and
the new version in that one transaction: a second opener waits, then finds nothing to do. Every
step is idempotent too, so a catalog an older PeiTu left with its version behind its columns
(two openers racing before this) is repaired by the next open instead of failing for good.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

from index.errors import CatalogTooNew

log = logging.getLogger(__name__)

# Ordered migrations: MIGRATIONS[n] brings a catalog from user_version n to n + 1. Append new
# steps at the end, never edit a released one: data folders made by older versions upgrade in
# place on open. Version 1 is the schema before versioning (its IF NOT EXISTS makes it a no-op
# on those older, unversioned catalogs, which report user_version 0).
SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS files (
    rel_path TEXT PRIMARY KEY,
    photo_id TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    taken_at TEXT,
    gps_lat REAL,
    gps_lon REAL
);
CREATE INDEX IF NOT EXISTS files_photo ON files(photo_id);
CREATE TABLE IF NOT EXISTS descriptions (
    photo_id TEXT NOT NULL,
    describer_key TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (photo_id, describer_key)
);
CREATE TABLE IF NOT EXISTS embedded (
    photo_id TEXT PRIMARY KEY,
    text_sha TEXT NOT NULL,
    model TEXT NOT NULL,
    rel_path TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    mode TEXT NOT NULL,
    report TEXT
);
CREATE TABLE IF NOT EXISTS excluded (
    photo_id TEXT PRIMARY KEY,
    excluded_at TEXT NOT NULL
);
"""

# Photos whose pixels are in the visual collection, and with which visual model (issue 14).
VISUAL_EMBEDDED = """
CREATE TABLE IF NOT EXISTS visual_embedded (
    photo_id TEXT PRIMARY KEY,
    model TEXT NOT NULL
);
"""

# Each photo's perceptual hash (`index.library.dedup`), computed once when the scan reads the photo
# (issue 12): a rebuild or a move reuses it instead of decoding the photo again. Keyed by
# photo_id (the hash is of the content); a data folder from before fills it as photos need it.
PERCEPTUAL_HASHES = """
CREATE TABLE IF NOT EXISTS perceptual_hashes (
    photo_id TEXT PRIMARY KEY,
    phash TEXT NOT NULL
);
"""

Step = Callable[[sqlite3.Connection], None]


def run_script(script: str) -> Step:
    """A step of `CREATE … IF NOT EXISTS` statements (idempotent as written), run one by one
    inside the caller's transaction (`executescript` would commit it)."""

    def step(db: sqlite3.Connection) -> None:
        for statement in script.split(";"):
            if statement.strip():
                db.execute(statement)

    return step


def add_column(table: str, column: str, definition: str) -> Step:
    """A step that adds a column unless the table has it already."""

    def step(db: sqlite3.Connection) -> None:
        if column not in table_columns(db, table):
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")

    return step


def table_columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {str(row[1]) for row in db.execute(f"PRAGMA table_info({table})")}


MIGRATIONS: tuple[Step, ...] = (
    run_script(SCHEMA_V1),
    # v2: a description written by `index --redescribe` supersedes the photo's others (tiers).
    add_column("descriptions", "superseded", "INTEGER NOT NULL DEFAULT 0"),
    run_script(VISUAL_EMBEDDED),
    run_script(PERCEPTUAL_HASHES),
)
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite3.Connection, path: Path, steps: Sequence[Step] = MIGRATIONS) -> None:
    """Bring the catalog to the newest version `steps` know; refuse one a newer PeiTu wrote.

    `db` must be in autocommit mode or outside a transaction (sqlite3's default is fine)."""
    found = schema_version(db)
    _refuse_newer(found, len(steps), path)
    if found == len(steps):
        return  # the common case: nothing to write, no write lock taken
    db.execute("BEGIN IMMEDIATE")  # waits (the busy timeout) while another opener migrates
    try:
        version = schema_version(db)  # again: another process may have migrated meanwhile
        _refuse_newer(version, len(steps), path)
        for index in range(version, len(steps)):
            steps[index](db)
        if version < len(steps):
            db.execute(f"PRAGMA user_version={len(steps)}")
            log.info("catalog %s upgraded from schema %d to %d", path, version, len(steps))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _refuse_newer(version: int, known: int, path: Path) -> None:
    if version > known:
        raise CatalogTooNew(
            f"{path} was written by a newer PeiTu (catalog schema {version}, this version reads "
            f"up to {known}): upgrade PeiTu, or point PEITU_DATA_DIR at another folder"
        )
