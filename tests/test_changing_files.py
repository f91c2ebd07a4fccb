"""Files replaced while they are indexed (a sync tool's atomic rename) never keep a description
of the other version: a photo is described from the very bytes its id is the hash of."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path

from PIL import Image

from config.settings import VisionSettings
from index.search.embed import SentenceTransformerEmbedder
from index.wiring import build_app
from tests.support.core_fixtures import SettingsFactory
from tests.support.openai_server import FakeOpenAIServer, describe_image

FILES = 12


def _jpeg(rgb: tuple[int, int, int], size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, rgb).save(out, "JPEG", quality=90)
    return out.getvalue()


class Flipper:
    """Swaps each file between its blue and its red version by atomic rename, over and over."""

    def __init__(self, library: Path) -> None:
        self.library = library
        self.versions = [
            (_jpeg((40, 90, 220), (320 + i, 240)), _jpeg((210, 30, 30), (240, 320 + i)))
            for i in range(FILES)
        ]
        self.colour = {hashlib.sha256(blue).hexdigest(): "蓝" for blue, _ in self.versions}
        self.colour |= {hashlib.sha256(red).hexdigest(): "红" for _, red in self.versions}
        self.flips = 0
        self._lock = threading.Lock()  # the flipper's thread and the fake model both flip
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        for i, (blue, _) in enumerate(self.versions):
            (library / f"photo{i:02d}.jpg").write_bytes(blue)

    def flip_all(self) -> None:
        with self._lock:
            self._flip_all()

    def _flip_all(self) -> None:
        for i, versions in enumerate(self.versions):
            target = self.library / f"photo{i:02d}.jpg"
            data = versions[1] if target.read_bytes() == versions[0] else versions[0]
            temporary = self.library / f".sync-{i:02d}.tmp"  # hidden: the scan ignores it
            temporary.write_bytes(data)
            os.replace(temporary, target)
            self.flips += 1

    def _run(self) -> None:
        while not self._stop.wait(0.001):
            self.flip_all()

    def __enter__(self) -> Flipper:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_a_file_flipping_between_two_photos_never_keeps_the_other_ones_description(
    tmp_path: Path,
    make_settings: SettingsFactory,
    embedder: SentenceTransformerEmbedder,
    fake_vision_settings: VisionSettings,
    openai_server: FakeOpenAIServer,
) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    flipper = Flipper(library)
    settings = make_settings(library=library, vision=fake_vision_settings.model_dump())
    app = build_app(settings, embedder=embedder)

    def describe_and_flip(image: Image.Image) -> str:
        flipper.flip_all()  # the file changes while the model looks at the photo
        return describe_image(image)

    openai_server.vision_fn = describe_and_flip
    with flipper:
        for _ in range(2):
            app.index()
    openai_server.vision_fn = None
    assert flipper.flips > FILES
    final = app.index()  # the next run, with the files at rest
    stored = app.catalog.latest_descriptions(flipper.colour)
    assert stored, "nothing was described"
    for photo_id, description in stored.items():
        assert f"以{flipper.colour[photo_id]}色为主" in description.description, photo_id
    current = {hashlib.sha256(p.read_bytes()).hexdigest() for p in library.glob("*.jpg")}
    assert final.failed == 0 and len(current) == FILES
    assert current <= set(stored) and current == set(app.catalog.embedded()) == app.store.ids()
