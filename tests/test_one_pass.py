"""One pass of EfficientNet a photo when indexing offline: the describer's tagging pass gives the
photo's visual vector too, the visual phase runs only for photos described another way, and a
plugged visual model is never given the describer's vectors."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from index.describers.efficientnet import (
    Batch,
    EfficientNetLite0,
    _OnnxRunner,
    _TorchRunner,
    bundled_network,
    export_onnx,
    network_input,
)
from index.describers.offline import ImageNetTagger, OfflineDescriber
from index.models import PhotoFile
from index.ports import LocalDescriber, VisualEmbedder
from index.search.embed import SentenceTransformerEmbedder
from index.service import PeiTu
from index.visual.embed import EfficientNetVisualEmbedder
from index.wiring import build_app
from tests.support.core_fixtures import EVAL_DIR, SettingsFactory, SmallLibrary, read_eval_captions
from tests.test_visual import ColourHistogram


class CountingNetwork(EfficientNetLite0):
    """The real network, counting the images it runs on (every pass goes through `look`)."""

    def __init__(self) -> None:
        super().__init__()
        self.images = 0

    def look(self, batch: Batch) -> tuple[Batch, Batch]:
        self.images += len(batch)
        return super().look(batch)


class NoText:
    """A `TextReader` that finds no text (the OCR models are not what this is about)."""

    def read(self, image: Image.Image) -> list[str]:
        return []


def _offline(network: EfficientNetLite0) -> OfflineDescriber:
    return OfflineDescriber(
        max_pixels=50_000_000, reader=NoText(), tagger=ImageNetTagger(network=network)
    )


def _app(
    make_settings: SettingsFactory,
    library: SmallLibrary,
    embedder: SentenceTransformerEmbedder,
    network: EfficientNetLite0 | None = None,
    visual: VisualEmbedder | None = None,
    **choices: Any,
) -> PeiTu:
    """The app over the library with the given visual model (the bundled one on `network`),
    the offline describer unless `choices` say otherwise."""
    settings = make_settings(library=library.root, visual={"batch_size": 8})
    if visual is None:
        visual = EfficientNetVisualEmbedder(network)
    choices.setdefault("describer", "offline")
    return build_app(settings, embedder=embedder, visual_embedder=visual, **choices)


def test_an_offline_index_runs_the_network_once_a_photo(
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    embedder: SentenceTransformerEmbedder,
) -> None:
    network = CountingNetwork()
    app = _app(make_settings, small_library, embedder, network)
    report = app.index(describer=_offline(network))
    photos = len(small_library.photos)
    assert (report.described, report.visual_embedded, report.visual_failed) == (photos, photos, 0)
    assert network.images == photos  # the describer's pass only: no visual phase
    assert app.visual is not None and app.visual.store.count() == photos
    assert set(app.catalog.visual_embedded().values()) == {app.visual.embedder.identity}
    again = app.index(describer=_offline(network))
    assert (again.described, again.visual_embedded, network.images) == (0, 0, photos)


def test_the_describers_vector_is_the_one_the_visual_phase_makes(
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    embedder: SentenceTransformerEmbedder,
) -> None:
    network = CountingNetwork()
    app = _app(make_settings, small_library, embedder, network)
    app.index(describer=_offline(network))
    assert app.visual is not None
    for photo in small_library.photos[:5]:
        path = small_library.root / photo.rel_path
        photo_id = app.catalog.files()[photo.rel_path]
        stored = app.visual.store.stored(photo_id)
        made = app.visual.embed_one(app.visual.decode(path))
        assert stored is not None and float(np.dot(stored[0], made)) > 0.9999
        assert stored[1] == app.catalog.perceptual_hashes([photo_id])[photo_id]


def test_photos_described_another_way_get_the_visual_phase(
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    embedder: SentenceTransformerEmbedder,
) -> None:
    network = CountingNetwork()
    app = _app(
        make_settings, small_library, embedder, network, descriptions=small_library.descriptions
    )
    report = app.index()
    assert report.visual_embedded == len(small_library.photos) == network.images


def test_a_plugged_visual_model_is_not_given_the_describers_vectors(
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    embedder: SentenceTransformerEmbedder,
) -> None:
    network = CountingNetwork()
    app = _app(make_settings, small_library, embedder, visual=ColourHistogram())
    report = app.index(describer=_offline(network))
    assert report.visual_embedded == len(small_library.photos)
    assert set(app.catalog.visual_embedded().values()) == {ColourHistogram.identity}
    assert network.images == len(small_library.photos)  # tagging only


def test_the_network_runs_in_onnxruntime_as_it_does_in_torch(tmp_path: Path) -> None:
    """The export kept in the cache folder gives torch's class scores and pooled features (the
    tags and the visual vectors stay what they were), without torch at run time."""
    export_onnx(tmp_path / "efficientnet.onnx")
    images = [network_input(Image.open(EVAL_DIR / "images" / p.rel_path)) for p in
              read_eval_captions(3)]  # fmt: skip
    batch = np.concatenate(images)
    onnx, torch = _OnnxRunner(tmp_path / "efficientnet.onnx"), _TorchRunner()
    for ours, theirs in zip(onnx.look(batch), torch.look(batch), strict=True):
        assert ours.shape == theirs.shape and float(np.abs(ours - theirs).max()) < 1e-3
    assert bundled_network().look(batch[:1])[0].argmax() == torch.look(batch[:1])[0].argmax()


class CountsAtOnce:
    """A describer on this machine's CPU (`LocalDescriber`) that records how many photos it was
    describing at the same time."""

    key = "counting@v1"
    parallel = 2

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.most = 0

    def describe(self, photo: PhotoFile, data: bytes | None = None) -> str:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(0.05)
        with self._lock:
            self.now -= 1
        return "一张照片"

    def describe_bytes(self, data: bytes) -> str:
        return "一张照片"


def test_a_local_describer_describes_no_more_photos_at_once_than_it_says(
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    embedder: SentenceTransformerEmbedder,
) -> None:
    settings = make_settings(
        library=small_library.root, vision={"concurrency": 8}, visual={"backend": "off"}
    )
    app = build_app(settings, embedder=embedder)
    describer = CountsAtOnce()
    assert isinstance(describer, LocalDescriber)
    report = app.index(describer=describer)
    assert report.described == len(small_library.photos) and describer.most == 2
