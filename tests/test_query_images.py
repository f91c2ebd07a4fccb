"""A small file of a large picture buys no large decode: a query image costs about what a phone
photo costs, whatever its pixels (a JPEG decoded at reduced scale, anything else within the
query budget or refused before a pixel is decoded), and image queries decode two at a time.

Peak memory is read from a fresh process per image (`ru_maxrss`), the done-when of issue 26:
at most 300 MB over a normal photo. End to end (CLI and HTTP, before and after) it is measured
by bench/bench_query_memory.py."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from index.errors import PhotoUnreadable, Reason
from index.library.imaging import QUERY_BUDGET, open_query_image
from index.ports import Vectors
from index.search.embed import SentenceTransformerEmbedder
from index.wiring import build_app
from tests.support.core_fixtures import SettingsFactory, SmallLibrary

REPO = Path(__file__).resolve().parents[1]
SIDE = 10_900  # 118.8 Mpx: just under the library's limit of 120 Mpx
OVER_NORMAL_MB = 300

# One query as the similar-photo search decodes it: the image, its keypoints and its hash.
_DECODE_ONE = """
import json, resource, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from index.errors import PhotoUnreadable
from index.library.imaging import open_query_image
from index.library.near_duplicate import keypoints
from index.visual.index import QUERY_SIDE, image_phash
data = Path(sys.argv[1]).read_bytes()
try:
    image = open_query_image(data, QUERY_SIDE, max_pixels=120_000_000).convert("RGB")
    keypoints(image)
    image_phash(image)
    outcome = f"{image.width}x{image.height}"
except PhotoUnreadable as error:
    outcome = error.reason
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"outcome": outcome, "peak_mb": peak_mb}))
"""


@pytest.fixture(scope="module")
def queries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("queries")
    made = {
        "phone": folder / "phone.jpg",
        "grey_png": folder / "grey.png",
        "huge_jpeg": folder / "huge.jpg",
    }
    rng = np.random.default_rng(3)
    small = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
    Image.fromarray(small).resize((4000, 3000)).save(made["phone"], quality=90)
    grey = Image.new("L", (SIDE, SIDE), 128)
    grey.save(made["grey_png"], optimize=True)  # ~136 KB
    grey.save(made["huge_jpeg"], quality=80)
    return made


def _decoded_in_a_fresh_process(path: Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", _DECODE_ONE, str(path), str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    answer: dict[str, object] = json.loads(done.stdout)
    return answer


def test_a_118_megapixel_query_costs_at_most_300_mb_over_a_phone_photo(
    queries: dict[str, Path],
) -> None:
    phone = _decoded_in_a_fresh_process(queries["phone"])
    for name in ("grey_png", "huge_jpeg"):
        big = _decoded_in_a_fresh_process(queries[name])
        over = float(str(big["peak_mb"])) - float(str(phone["peak_mb"]))
        assert over <= OVER_NORMAL_MB, (name, big, phone)
    assert _decoded_in_a_fresh_process(queries["grey_png"])["outcome"] == "too_many_pixels"
    width, height = map(
        int, str(_decoded_in_a_fresh_process(queries["huge_jpeg"])["outcome"]).split("x")
    )
    assert min(width, height) >= 320 and max(width, height) < 2 * SIDE // 8  # 1/8 scale


def test_what_would_cost_more_than_the_budget_is_refused_before_decoding() -> None:
    """A header alone: the pixels are never there to decode (a PNG cut after its header)."""
    header_only = _png_header(8000, 7000, colour=True)  # 56 Mpx: over 50
    with pytest.raises(PhotoUnreadable) as refused:
        open_query_image(header_only, 320, max_pixels=120_000_000)
    assert refused.value.reason is Reason.TOO_MANY_PIXELS
    assert "query image may take 50 megapixels" in refused.value.detail
    with pytest.raises(PhotoUnreadable) as refused:  # a library photo: no query budget
        open_query_image(header_only, 320, max_pixels=120_000_000, budget=None)
    assert refused.value.reason is Reason.TRUNCATED  # it went on to decode, and found no data
    assert QUERY_BUDGET.max_bytes < 8000 * 7000 * 4


def _png_header(width: int, height: int, colour: bool) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2 if colour else 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def test_an_upright_query_keeps_its_orientation_when_reduced(tmp_path: Path) -> None:
    """Reduced before it is turned upright: a portrait phone photo stays a portrait."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: displayed turned a quarter
    path = tmp_path / "portrait.png"
    Image.new("RGB", (4000, 3000), (10, 200, 30)).save(path, exif=exif)
    image = open_query_image(path.read_bytes(), 320, max_pixels=120_000_000)
    assert image.height > image.width and min(image.size) >= 320


class SlowCountingEmbedder:
    """A `VisualEmbedder` that takes its time and records how many embed at once."""

    identity = "slow-counting@v1"
    dimension = 8

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()
        self.slow = False

    def embed_images(self, images: Sequence[Image.Image]) -> Vectors:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        if self.slow:
            time.sleep(0.3)
        with self.lock:
            self.running -= 1
        rows = np.ones((len(images), self.dimension), dtype=np.float32)
        return rows / np.sqrt(self.dimension)


def test_image_queries_decode_two_at_a_time(
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    embedder: SentenceTransformerEmbedder,
    queries: dict[str, Path],
) -> None:
    counting = SlowCountingEmbedder()
    settings = make_settings(library=small_library.root)
    app = build_app(
        settings,
        descriptions=small_library.descriptions,
        embedder=embedder,
        visual_embedder=counting,
    )
    try:
        app.index()
        counting.slow, counting.most = True, 0
        data = queries["phone"].read_bytes()
        callers = [threading.Thread(target=app.similar_to_image, args=(data,)) for _ in range(6)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(timeout=120)
    finally:
        app.close()
    assert counting.most == 2
