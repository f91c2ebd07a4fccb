"""A photo's perceptual hash is computed once, when the scan reads it, and kept in the catalog:
a rebuild or a move decodes no photo again for it, and a data folder made before the catalog
kept hashes upgrades and computes each photo's hash once more, then never again.

Decodes are counted by a real wrapper of `index.library.imaging.read_photo` handed to the `Indexer`
(the scan and the indexer decode through it), over real parts: SQLite catalog, embedded Chroma,
m3e-small, the sidecar describer."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from chromadb.api import ClientAPI

from index.describers.sidecar import SidecarDescriber
from index.indexing.indexer import Indexer, ScanLimits
from index.library.catalog import SCHEMA_VERSION, Catalog
from index.library.dedup import perceptual_hash
from index.library.imaging import DecodedPhoto, ImageSource, read_photo
from index.models import PhotoFile
from index.search.embed import SentenceTransformerEmbedder
from index.search.retrieval import DocumentEncoder
from index.search.store import ChromaStore, make_chroma_client
from tests.support.core_fixtures import SmallLibrary, build_small_library

COLLECTION = "peitu_photos"
LIMITS = ScanLimits(max_file_bytes=200 * 1024 * 1024, max_pixels=120_000_000)
PHOTOS = 4


class CountingReader:
    """`read_photo`, counting what it decodes."""

    def __init__(self) -> None:
        self.decodes = 0

    def __call__(
        self, source: ImageSource, *, max_pixels: int, max_bytes: int | None = None
    ) -> DecodedPhoto:
        self.decodes += 1
        return read_photo(source, max_pixels=max_pixels, max_bytes=max_bytes)


@dataclass
class Parts:
    catalog: Catalog
    indexer: Indexer
    reader: CountingReader


@pytest.fixture
def library(tmp_path: Path) -> SmallLibrary:
    return build_small_library(tmp_path / "lib", PHOTOS)


@pytest.fixture
def chroma(tmp_path: Path) -> ClientAPI:
    return make_chroma_client("", tmp_path / "data")


OpenParts = Callable[[], Parts]


@pytest.fixture
def open_parts(
    tmp_path: Path,
    library: SmallLibrary,
    chroma: ClientAPI,
    embedder: SentenceTransformerEmbedder,
) -> Iterator[OpenParts]:
    """Opens the indexer's parts over one data folder (again, after a close)."""
    opened: list[Catalog] = []

    def open_() -> Parts:
        encoder = DocumentEncoder()
        store = ChromaStore(
            chroma, COLLECTION, embedder.model_name, embedder.dimension, encoder.identity
        )
        catalog = Catalog(tmp_path / "data" / "catalog.sqlite3")
        opened.append(catalog)
        reader = CountingReader()
        describer = SidecarDescriber(library.descriptions)
        indexer = Indexer(catalog, store, embedder, describer, LIMITS, encoder=encoder, read=reader)
        return Parts(catalog, indexer, reader)

    yield open_
    for catalog in opened:
        catalog.close()


def stored_hashes(chroma: ClientAPI) -> dict[str, str]:
    """path -> the `phash` the vector collection holds for it (read through Chroma itself)."""
    found = chroma.get_collection(COLLECTION).get(include=["metadatas"])
    return {str(m["path"]): str(m["phash"]) for m in found["metadatas"] or []}


def expected_hashes(library: SmallLibrary) -> dict[str, str]:
    out: dict[str, str] = {}
    for photo in sorted(library.root.rglob("*.jpg")):
        digest = perceptual_hash(photo, max_pixels=LIMITS.max_pixels)
        assert digest is not None
        out[photo.relative_to(library.root).as_posix()] = digest
    return out


def test_a_rebuild_and_a_move_decode_no_photo_again_for_its_hash(
    open_parts: OpenParts, library: SmallLibrary, chroma: ClientAPI
) -> None:
    parts = open_parts()
    report = parts.indexer.run(library.root)
    assert (report.new, report.embedded) == (PHOTOS, PHOTOS)
    assert parts.reader.decodes == PHOTOS  # the scan's one decode of each photo
    assert len(parts.catalog.perceptual_hashes(parts.catalog.photo_ids())) == PHOTOS
    assert stored_hashes(chroma) == expected_hashes(library)

    report = parts.indexer.run(library.root, "rebuild")
    assert report.embedded == PHOTOS
    assert parts.reader.decodes == PHOTOS  # none more: every hash came from the catalog
    assert stored_hashes(chroma) == expected_hashes(library)

    first = library.root / library.photos[0].rel_path
    (library.root / "album").mkdir()
    first.rename(library.root / "album" / first.name)
    report = parts.indexer.run(library.root)
    assert (report.moved, report.embedded) == (1, 0)
    # the scan reads the moved file once (it must, to know its bytes); the new path's metadata
    # takes the kept hash instead of a second decode
    assert parts.reader.decodes == PHOTOS + 1
    assert stored_hashes(chroma) == expected_hashes(library)


def test_a_data_folder_from_before_kept_hashes_upgrades_and_hashes_each_photo_once(
    open_parts: OpenParts, library: SmallLibrary, chroma: ClientAPI, tmp_path: Path
) -> None:
    parts = open_parts()
    parts.indexer.run(library.root)
    parts.catalog.close()
    catalog_path = tmp_path / "data" / "catalog.sqlite3"
    with sqlite3.connect(catalog_path) as db:  # the catalog as main wrote it before (schema 3)
        db.executescript("DROP TABLE perceptual_hashes; PRAGMA user_version=3;")

    parts = open_parts()
    with sqlite3.connect(catalog_path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert parts.catalog.perceptual_hashes(parts.catalog.photo_ids()) == {}
    report = parts.indexer.run(library.root)
    assert (report.unchanged, report.described, report.embedded) == (PHOTOS, 0, 0)
    assert parts.reader.decodes == 0  # nothing needed a hash yet

    report = parts.indexer.run(library.root, "rebuild")
    assert (report.described, report.embedded) == (0, PHOTOS)  # descriptions survived
    assert parts.reader.decodes == PHOTOS  # each photo hashed once, for the rebuild
    assert stored_hashes(chroma) == expected_hashes(library)

    parts.indexer.run(library.root, "rebuild")
    assert parts.reader.decodes == PHOTOS  # and kept: never again
    assert len(parts.catalog.perceptual_hashes(parts.catalog.photo_ids())) == PHOTOS


def test_a_hash_stays_while_its_photo_does_and_leaves_with_it(tmp_path: Path) -> None:
    def photo(rel_path: str, photo_id: str) -> PhotoFile:
        return PhotoFile(photo_id, Path(rel_path), rel_path, 1, 0.0, 10, 10)

    catalog = Catalog(tmp_path / "catalog.sqlite3")
    try:
        catalog.replace_files([photo("a.jpg", "p1"), photo("b.jpg", "p2")])
        catalog.save_perceptual_hashes({"p1": "0f" * 8, "p2": "f0" * 8})
        catalog.replace_files([photo("moved/a.jpg", "p1")])  # p1 moved, p2 left
        assert catalog.perceptual_hashes(["p1", "p2"]) == {"p1": "0f" * 8}
    finally:
        catalog.close()
