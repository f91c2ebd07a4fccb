"""The catalog's schema is versioned: old data folders upgrade on open, newer ones are refused,
and any number of processes may open (and so upgrade) one catalog at the same instant."""

from __future__ import annotations

import multiprocessing
import sqlite3
from multiprocessing.synchronize import Barrier
from pathlib import Path
from queue import Empty
from typing import Any

import pytest

from index.errors import CatalogTooNew
from index.library.catalog import Catalog
from index.library.migrations import MIGRATIONS, SCHEMA_V1, SCHEMA_VERSION, migrate, table_columns
from index.search.sqlite_files import open_wal

TRIES = 12
OLDER_SCHEMA = SCHEMA_VERSION - 1  # what the PeiTu before the newest step knew


def _user_version(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


def _works(path: Path) -> None:
    """The catalog opens, takes a description and a redescription, and reads them back."""
    catalog = Catalog(path)
    try:
        catalog.save_description("p1", "vision:a", "海边的狗")
        catalog.save_description("p1", "vision:b", "沙滩上的狗", supersede=True)
        assert catalog.best_descriptions(["p1"])["p1"].description == "沙滩上的狗"
        catalog.save_perceptual_hashes({"p1": "0123456789abcdef"})
        catalog.mark_visual_embedded(["p1"], "model")
    finally:
        catalog.close()
    assert _user_version(path) == SCHEMA_VERSION


def test_a_new_catalog_is_at_the_current_version(tmp_path: Path) -> None:
    Catalog(tmp_path / "catalog.sqlite3").close()
    assert _user_version(tmp_path / "catalog.sqlite3") == SCHEMA_VERSION == len(MIGRATIONS)


def test_an_unversioned_catalog_keeps_its_rows_when_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite3"
    with sqlite3.connect(path) as db:  # what main wrote before schema versions existed
        db.executescript(SCHEMA_V1)
        db.execute("INSERT INTO descriptions VALUES ('p1', 'sidecar', '海边的狗', '2026-01-01')")
    catalog = Catalog(path)
    try:
        assert catalog.has_description("p1", "sidecar")
    finally:
        catalog.close()
    assert _user_version(path) == SCHEMA_VERSION


def test_a_catalog_from_a_newer_peitu_is_refused_with_a_message(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(CatalogTooNew, match="newer PeiTu"):
        Catalog(path)


def test_a_catalog_left_with_its_version_behind_its_columns_is_repaired(tmp_path: Path) -> None:
    """Today's broken folders: two openers raced, one set the version back to 1 after the other
    had added the `superseded` column, and every open then failed on "duplicate column"."""
    path = tmp_path / "catalog.sqlite3"
    db = sqlite3.connect(path)
    migrate(db, path)
    db.execute("INSERT INTO descriptions VALUES ('p0', 'sidecar', '旧的描述', '2026-01-01', 0)")
    db.commit()
    db.execute("PRAGMA user_version=1")
    db.close()
    _works(path)
    catalog = Catalog(path)
    try:
        assert catalog.has_description("p0", "sidecar")  # nothing lost by the repair
    finally:
        catalog.close()
    with sqlite3.connect(path) as check:
        assert "superseded" in table_columns(check, "descriptions")


def _open_at_once(
    root: str, barrier: Barrier, errors: Any, schema: int = SCHEMA_VERSION, tries: int = TRIES
) -> None:
    """In a child process: open catalog `root/<try>/catalog.sqlite3` the instant every other
    child is ready too, as a PeiTu that knows `schema` steps; report what went wrong."""
    for attempt in range(tries):
        path = Path(root) / str(attempt) / "catalog.sqlite3"
        path.parent.mkdir(parents=True, exist_ok=True)
        barrier.wait(timeout=120)
        try:
            if schema == SCHEMA_VERSION:
                Catalog(path).close()
            else:
                db = open_wal(path, timeout_s=30)
                migrate(db, path, MIGRATIONS[:schema])
                db.close()
        except CatalogTooNew:
            errors.put((attempt, schema, "too new"))  # the older one may meet the newer's work
        except Exception as error:  # reported to the test, which fails on it
            errors.put((attempt, schema, repr(error)))


def _race(root: Path, schemas: list[int]) -> list[tuple[int, int, str]]:
    """One child per schema opening each of `TRIES` new catalogs at the same instant."""
    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(len(schemas))
    errors = spawn.Queue()
    children = [
        spawn.Process(target=_open_at_once, args=(str(root), barrier, errors, schema))
        for schema in schemas
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=300)
    assert [child.exitcode for child in children] == [0] * len(schemas)
    found = []
    while True:
        try:
            found.append(errors.get(timeout=1))
        except Empty:
            return found


@pytest.mark.parametrize("openers", [2, 5])
def test_processes_opening_one_new_catalog_at_once_all_succeed(
    tmp_path: Path, openers: int
) -> None:
    assert _race(tmp_path, [SCHEMA_VERSION] * openers) == []
    for attempt in range(TRIES):
        _works(tmp_path / str(attempt) / "catalog.sqlite3")


def test_an_older_and_a_newer_peitu_opening_one_catalog_at_once(tmp_path: Path) -> None:
    """The older one either finishes first (the newer then adds its step) or finds the newer's
    catalog and refuses it; the catalog always ends whole, at the newer version."""
    problems = _race(tmp_path, [OLDER_SCHEMA, SCHEMA_VERSION])
    assert [p for p in problems if p[2] != "too new" or p[1] != OLDER_SCHEMA] == []
    for attempt in range(TRIES):
        _works(tmp_path / str(attempt) / "catalog.sqlite3")
