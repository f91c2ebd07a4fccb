"""Symlinks out of the library, through the whole app: skipped unless the setting allows them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from index.search.embed import SentenceTransformerEmbedder
from index.wiring import build_app
from tests.support.core_fixtures import EVAL_DIR, SettingsFactory, SmallLibrary


@pytest.mark.parametrize("follow", [False, True])
def test_a_folder_linked_from_outside_is_indexed_only_when_allowed(
    follow: bool,
    tmp_path: Path,
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    embedder: SentenceTransformerEmbedder,
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    extra = small_library.photos[0].rel_path
    shutil.copyfile(EVAL_DIR / "images" / extra, outside / "extra.jpg")
    (small_library.root / "linked").symlink_to(outside, target_is_directory=True)
    with small_library.descriptions.open("a", encoding="utf-8") as sidecar:
        line = {"image": "linked/extra.jpg", "description": "来自图库之外的照片"}
        sidecar.write(json.dumps(line, ensure_ascii=False) + "\n")
    settings = make_settings(library=small_library.root, indexing={"follow_external_links": follow})
    app = build_app(settings, descriptions=small_library.descriptions, embedder=embedder)
    report = app.index()
    app.close()
    if follow:
        assert (report.scanned, report.skipped) == (31, {})
    else:
        assert (report.scanned, report.skipped) == (30, {"outside_library": 1})
