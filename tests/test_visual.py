"""The visual index: its own identity, resumable, rebuilt on a model change without touching
descriptions; one EfficientNet per process; a port other image models fit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from config import SettingsInvalid
from index.describers.efficientnet import FEATURE_DIMENSION, bundled_network, normalised
from index.describers.offline import ImageNetTagger
from index.errors import IndexMismatch, ModelUnavailable
from index.ports import Vectors, VisualEmbedder
from index.search.embed import SentenceTransformerEmbedder
from index.service import PeiTu
from index.visual.embed import EfficientNetVisualEmbedder
from index.wiring import build_app
from tests.support.core_fixtures import EVAL_DIR, SettingsFactory, SmallLibrary, read_eval_captions
from tests.support.edits import edited_copy


class ColourHistogram:
    """A second `VisualEmbedder`: 4x4x4 RGB histogram. Stands for a user's own model."""

    identity = "rgb-histogram-64@v1"
    dimension = 64

    def embed_images(self, images: Sequence[Image.Image]) -> Vectors:
        rows = []
        for image in images:
            pixels = np.asarray(image.convert("RGB").resize((64, 64))) // 64
            bins = pixels[..., 0] * 16 + pixels[..., 1] * 4 + pixels[..., 2]
            rows.append(np.bincount(bins.ravel(), minlength=64).astype(np.float32))
        return normalised(np.stack(rows)) if rows else np.zeros((0, 64), np.float32)


def _app(
    make_settings: SettingsFactory,
    library: SmallLibrary,
    embedder: SentenceTransformerEmbedder,
    visual: VisualEmbedder | None = None,
) -> PeiTu:
    settings = make_settings(library=library.root, visual={"batch_size": 8})
    return build_app(
        settings, descriptions=library.descriptions, embedder=embedder, visual_embedder=visual
    )


def _eval_images(count: int) -> list[Image.Image]:
    return [Image.open(EVAL_DIR / "images" / p.rel_path) for p in read_eval_captions(count)]


@pytest.mark.parametrize("make", [EfficientNetVisualEmbedder, ColourHistogram])
def test_visual_embedders_give_unit_rows_of_their_dimension(make: type) -> None:
    """The port's contract, for the bundled model and for another one."""
    model: VisualEmbedder = make()
    images = [*_eval_images(3), Image.new("L", (31, 500), 128)]  # grey, thin: still one row
    vectors = model.embed_images(images)
    assert vectors.shape == (4, model.dimension) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert model.embed_images([]).shape == (0, model.dimension) and model.identity
    again = model.embed_images(images[:1])
    assert np.allclose(again[0], vectors[0], atol=1e-4)  # one at a time = in a batch


def test_the_tagger_and_the_visual_embedder_share_one_network() -> None:
    tagger, visual = ImageNetTagger(), EfficientNetVisualEmbedder()
    assert tagger.network is visual.network is bundled_network()
    assert EfficientNetVisualEmbedder().dimension == FEATURE_DIMENSION


def test_a_stopped_visual_phase_continues_where_it_stopped(
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    embedder: SentenceTransformerEmbedder,
) -> None:
    app = _app(make_settings, small_library, embedder, ColourHistogram())
    stop = threading.Event()

    def stop_after_first_batch(phase: str, done: int, total: int) -> None:
        if phase == "visual" and done > 0:
            stop.set()

    first = app.index(progress=stop_after_first_batch, cancel=stop)
    second = app.index()
    assert first.cancelled and first.visual_embedded == 8
    assert len(app.catalog.visual_embedded()) == 30 and app.visual is not None
    assert second.visual_embedded == 22 and second.described == 0 and second.embedded == 0
    assert app.visual.store.count() == 30
    assert app.index().visual_embedded == 0


def test_a_new_visual_model_rebuilds_only_the_visual_index(
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    embedder: SentenceTransformerEmbedder,
) -> None:
    _app(make_settings, small_library, embedder).index()  # the bundled model
    app = _app(make_settings, small_library, embedder, ColourHistogram())
    photo_id = next(iter(app.catalog.visual_embedded()))
    with pytest.raises(IndexMismatch, match="visual index was built with 'efficientnet-lite0"):
        app.similar_to_photo(photo_id)
    report = app.index()
    assert (report.described, report.embedded, report.visual_embedded) == (0, 0, 30)
    assert set(app.catalog.visual_embedded().values()) == {ColourHistogram.identity}
    found = app.similar_to_photo(photo_id)
    assert found is not None and len(found.results) == 5
    assert photo_id not in [r.photo_id for r in found.results]
    assert app.recommend(small_library.photos[0].captions[4], rerank=False).results  # text intact


def test_a_deleted_photo_leaves_the_visual_index_and_a_moved_one_keeps_its_vector(
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    embedder: SentenceTransformerEmbedder,
) -> None:
    app = _app(make_settings, small_library, embedder, ColourHistogram())
    app.index()
    gone, moved = small_library.photos[0], small_library.photos[1]
    gone_id = app.catalog.files()[gone.rel_path]
    app.delete_photo(gone_id)
    (small_library.root / "moved").mkdir()
    (small_library.root / moved.rel_path).rename(small_library.root / "moved" / moved.rel_path)
    report = app.index()
    assert app.visual is not None and gone_id not in app.visual.store.ids()
    assert gone_id not in app.catalog.visual_embedded() and report.visual_embedded == 0
    assert app.visual.store.count() == 29


def test_similar_without_the_visual_index_searches_by_the_stored_description(
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    embedder: SentenceTransformerEmbedder,
) -> None:
    settings = make_settings(library=small_library.root, visual={"backend": "off"})
    app = build_app(settings, descriptions=small_library.descriptions, embedder=embedder)
    report = app.index()
    photo_id = app.catalog.files()[small_library.photos[2].rel_path]
    found = app.similar_to_photo(photo_id)
    assert app.visual is None and report.visual_embedded == 0
    assert (
        found is not None and found.results and photo_id not in [r.photo_id for r in found.results]
    )
    assert app.similar_to_photo("0" * 64) is None


def test_an_image_with_an_exact_copy_in_the_library_gets_the_copy_first(
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    embedder: SentenceTransformerEmbedder,
    tmp_path: Path,
) -> None:
    app = _app(make_settings, small_library, embedder)
    app.index()
    data = (small_library.root / small_library.photos[4].rel_path).read_bytes()
    copy = tmp_path / "copy.png"
    Image.open(small_library.root / small_library.photos[4].rel_path).save(copy)
    found = app.similar_to_image(copy.read_bytes()).results
    assert found[0].path == small_library.photos[4].rel_path
    assert found[0].reason.startswith("和这张图是同一个画面")
    assert data != copy.read_bytes()


def _peitu(tmp_path: Path, m3e_path: Path, library: Path, *args: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PEITU_", "DASHSCOPE_"))}
    env.update(
        HF_HUB_OFFLINE="1",
        PEITU_DATA_DIR=str(tmp_path / "data"),
        PEITU_EMBEDDING__MODEL=str(m3e_path),
        PEITU_RERANK__ENABLED="false",
        PEITU_LIBRARY=str(library),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    payload: dict[str, Any] = json.loads(proc.stdout)
    return payload


def test_peitu_similar_and_a_running_app_see_what_another_process_indexed(
    tmp_path: Path,
    m3e_path: Path,
    small_library: SmallLibrary,
    make_settings: SettingsFactory,
    embedder: SentenceTransformerEmbedder,
) -> None:
    """The server keeps the visual collection open while `peitu index` fills it elsewhere."""
    settings = make_settings(library=small_library.root, data_dir=tmp_path / "data")
    running = build_app(settings, embedder=embedder)
    target = small_library.photos[3]
    edited = tmp_path / "edited.jpg"
    edited.write_bytes(edited_copy((small_library.root / target.rel_path).read_bytes()))
    assert running.similar_to_image(edited.read_bytes()).results == []
    root = small_library.root
    report = _peitu(
        tmp_path, m3e_path, root, "index", "--descriptions", str(small_library.descriptions)
    )
    by_file = _peitu(tmp_path, m3e_path, root, "similar", str(edited))
    photo_id = by_file["results"][0]["photo_id"]
    by_id = _peitu(tmp_path, m3e_path, root, "similar", photo_id, "--top-k", "3")
    found = running.similar_to_image(edited.read_bytes()).results
    assert report["visual_embedded"] == 30
    assert by_file["results"][0]["path"] == target.rel_path and len(by_file["results"]) == 5
    assert len(by_id["results"]) == 3 and photo_id not in [r["photo_id"] for r in by_id["results"]]
    assert found and found[0].path == target.rel_path
    running.close()


def test_an_image_model_named_in_the_settings_is_used(
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    embedder: SentenceTransformerEmbedder,
) -> None:
    settings = make_settings(
        library=small_library.root, visual={"embedder": "tests.test_visual:ColourHistogram"}
    )
    app = build_app(settings, descriptions=small_library.descriptions, embedder=embedder)
    assert app.visual is not None and app.visual.embedder.identity == ColourHistogram.identity
    with pytest.raises(SettingsInvalid, match="PEITU_VISUAL__EMBEDDER"):
        make_settings(visual={"embedder": "no colon here"})
    missing = make_settings(visual={"embedder": "tests.nowhere:Model"})
    with pytest.raises(ModelUnavailable, match=r"cannot load the visual embedder tests\.nowhere"):
        build_app(missing, embedder=embedder)
