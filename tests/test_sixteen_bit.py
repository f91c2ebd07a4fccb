"""16-bit images (greyscale I;16 PNG, 48-bit RGB PNG) are scaled to 8 bits, never clipped to
white: thumbnails, the picture sent to the vision model, the offline describer's picture and
the perceptual hash all see the photo's real brightness."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageStat

from index.describers.offline import OfflineDescriber
from index.describers.vision import encode_for_vision
from index.library.dedup import perceptual_hash
from index.library.imaging import thumbnail_jpeg
from index.library.scan import scan_library
from index.models import PhotoFile

GREY_16 = 30000  # 30000 / 65535 of full scale: 117 in 8 bits
GREY_8 = GREY_16 / 257


def grey16_png(width: int = 200, height: int = 150, value: int = GREY_16) -> bytes:
    image = Image.fromarray(np.full((height, width), value, dtype=np.uint16))
    assert image.mode == "I;16"
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def rgb48_png(rgb: tuple[int, int, int], width: int = 64, height: int = 48) -> bytes:
    """A 16-bit-a-channel RGB PNG, written by hand (Pillow cannot save one)."""
    row = b"\x00" + struct.pack(">HHH", *rgb) * width

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


def _mean(jpeg: bytes) -> list[float]:
    return list(ImageStat.Stat(Image.open(io.BytesIO(jpeg)).convert("RGB")).mean)


def test_a_16_bit_grey_png_thumbnail_has_the_right_mean_brightness(tmp_path: Path) -> None:
    path = tmp_path / "scan.png"
    path.write_bytes(grey16_png())
    for source in (path, path.read_bytes()):
        mean = _mean(thumbnail_jpeg(source, 64, max_pixels=10_000_000))
        assert mean == pytest.approx([GREY_8] * 3, abs=3)


def test_a_48_bit_rgb_png_thumbnail_keeps_its_colour() -> None:
    mean = _mean(thumbnail_jpeg(rgb48_png((30000, 10000, 60000)), 32, max_pixels=10_000_000))
    assert mean == pytest.approx([30000 / 257, 10000 / 257, 60000 / 257], abs=3)


def test_the_vision_model_gets_the_16_bit_photo_at_its_brightness() -> None:
    assert _mean(encode_for_vision(grey16_png(), 128, max_pixels=10_000_000)) == pytest.approx(
        [GREY_8] * 3, abs=3
    )


class _RecordingTagger:
    def __init__(self) -> None:
        self.means: list[list[float]] = []

    def tags(self, image: Image.Image) -> list[tuple[str, float]]:
        self.means.append(list(ImageStat.Stat(image.convert("RGB")).mean))
        return [("灰色", 0.9)]


class _NoText:
    def read(self, image: Image.Image) -> list[str]:
        return []


def test_the_offline_describer_sees_the_16_bit_photo_at_its_brightness(tmp_path: Path) -> None:
    path = tmp_path / "scan.png"
    path.write_bytes(grey16_png())
    tagger = _RecordingTagger()
    describer = OfflineDescriber(max_pixels=10_000_000, reader=_NoText(), tagger=tagger)
    photo = PhotoFile("0" * 64, path, "scan.png", path.stat().st_size, 0.0, 200, 150)
    describer.describe(photo)
    describer.describe(photo, path.read_bytes())
    describer.describe_bytes(path.read_bytes())
    assert tagger.means == [pytest.approx([GREY_8] * 3, abs=3)] * 3


def test_the_perceptual_hash_of_a_16_bit_gradient_is_that_of_its_8_bit_copy(
    tmp_path: Path,
) -> None:
    ramp = np.tile(np.linspace(0, 65535, 256, dtype=np.uint16), (256, 1))
    Image.fromarray(ramp).save(tmp_path / "ramp16.png")
    Image.fromarray((ramp // 257).astype(np.uint8)).save(tmp_path / "ramp8.png")
    ramp16 = perceptual_hash(tmp_path / "ramp16.png", max_pixels=10_000_000)
    assert ramp16 == perceptual_hash(tmp_path / "ramp8.png", max_pixels=10_000_000)


def test_tiff_scans_are_indexed_16_bit_grey_and_multi_page_included(tmp_path: Path) -> None:
    library = tmp_path / "scans"
    library.mkdir()
    Image.new("RGB", (64, 48), (40, 90, 220)).save(library / "colour.tif")
    Image.fromarray(np.full((48, 64), GREY_16, dtype=np.uint16)).save(library / "grey16.tiff")
    pages = [Image.new("RGB", (32, 24), rgb) for rgb in ((200, 30, 30), (30, 200, 30))]
    pages[0].save(library / "pages.TIF", save_all=True, append_images=pages[1:])
    result = scan_library(library, max_file_bytes=10_000_000, max_pixels=10_000_000)
    assert [p.rel_path for p in result.photos] == ["colour.tif", "grey16.tiff", "pages.TIF"]
    assert result.skipped == {}
    grey = _mean(thumbnail_jpeg(library / "grey16.tiff", 32, max_pixels=10_000_000))
    assert grey == pytest.approx([GREY_8] * 3, abs=3)
    first_page = _mean(thumbnail_jpeg(library / "pages.TIF", 32, max_pixels=10_000_000))
    assert first_page == pytest.approx([200, 30, 30], abs=4)
