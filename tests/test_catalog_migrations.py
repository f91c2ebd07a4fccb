"""The catalog's schema is versioned: old data folders upgrade on open, newer ones are refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from index.errors import CatalogTooNew
from index.library.catalog import MIGRATIONS, SCHEMA_V1, SCHEMA_VERSION, Catalog


def _user_version(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


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
