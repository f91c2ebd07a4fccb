"""File names that are not valid UTF-8 (GBK, Latin-1): indexed losslessly and shown readably."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from index.library.catalog import Catalog
from index.library.names import readable_path
from index.models import PhotoFile
from tests.support.odd_names import SHOWN, make_odd_names_library
from tests.support.openai_server import FakeOpenAIServer
from tests.test_cli import _env, _json, peitu


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (b"plain/name.jpg", "plain/name.jpg"),
        ("海边拍照.jpg".encode("gbk"), "海边拍照.jpg"),
        ("相册/".encode() + "海边拍照.jpg".encode("gbk"), "相册/海边拍照.jpg"),
        (b"caf\xe9.jpg", "caf\\xe9.jpg"),
        (b"bad\xff\xfe/ok.jpg", "bad\\xff\\xfe/ok.jpg"),
    ],
)
def test_readable_path_decodes_gbk_else_escapes(raw: bytes, shown: str) -> None:
    assert readable_path(os.fsdecode(raw)) == shown


def test_the_catalog_keeps_a_name_that_is_not_utf8_byte_for_byte(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "catalog.sqlite3")
    names = [os.fsdecode(b"caf\xe9.jpg"), os.fsdecode("海边.jpg".encode("gbk")), "普通.jpg"]
    photos = [
        PhotoFile(f"{i:064x}", Path(name), name, 10 + i, 1.5, 4, 3) for i, name in enumerate(names)
    ]
    catalog.replace_files(photos)
    catalog.mark_embedded([(p.photo_id, "text", p.rel_path) for p in photos], "m")
    catalog.close()
    again = Catalog(tmp_path / "catalog.sqlite3")
    assert set(again.files()) == set(names)
    assert {os.fsencode(n) for n in again.files()} == {os.fsencode(n) for n in names}
    assert again.known_file(names[0], 10, 1.5) == photos[0]
    assert {r.rel_path for r in again.embedded().values()} == set(names)
    assert again.exclude_photo(photos[1].photo_id) == [names[1]]


def test_a_library_with_gbk_and_latin1_names_indexes_every_photo_and_shows_the_names(
    tmp_path: Path, m3e_path: Path, openai_server: FakeOpenAIServer
) -> None:
    library = make_odd_names_library(tmp_path / "odd")
    env = _env(
        tmp_path,
        m3e_path,
        PEITU_LIBRARY=str(library),
        PEITU_VISION__BASE_URL=openai_server.base_url,
        PEITU_VISION__MODEL="fake-vl",
        PEITU_SIMILARITY_THRESHOLD="0",
    )
    first = _json(peitu(env, "index", "--json"))
    assert (first["scanned"], first["described"], first["embedded"]) == (3, 3, 3)
    assert (first["failed"], first["skipped"]) == (0, {})
    second = _json(peitu(env, "index", "--json"))  # the stored names match the files again
    assert (second["unchanged"], second["described"], second["embedded"]) == (3, 0, 0)
    status = peitu(env, "status")
    assert status.returncode == 0 and "已索引 3 张（图库中 3 张）" in status.stdout
    texts = tmp_path / "texts.txt"
    texts.write_text("蓝天与大海，海边度假\n红灯笼与节日装饰，春节\n草地与森林，周末踏青\n")
    batch = peitu(env, "recommend", "--batch", str(texts), "--top-k", "1")
    assert batch.returncode == 0, batch.stderr
    found = [json.loads(line)["results"][0]["path"] for line in batch.stdout.splitlines()]
    assert found == [SHOWN["blue"], SHOWN["red"], SHOWN["green"]]
    human = peitu(env, "recommend", "蓝天与大海，海边度假", "--top-k", "1")
    assert human.returncode == 0 and str(library / SHOWN["blue"]) in human.stdout
