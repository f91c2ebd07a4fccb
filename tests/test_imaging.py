"""Safe image reading: every format we accept, every way a file fails, EXIF, thumbnails."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from PIL import ExifTags, Image
from PIL.TiffImagePlugin import IFDRational

from index.errors import PhotoUnreadable, Reason
from index.library.imaging import (
    has_image_extension,
    open_image,
    probe_image,
    read_metadata,
    register_heif,
    thumbnail_jpeg,
)
from tests.support.badfiles import (
    BAD_FILES,
    EXIF_LAT,
    EXIF_LON,
    EXIF_PHOTO,
    EXIF_TAKEN_AT,
    GIF_FIRST_FRAME,
    GOOD_PHOTOS,
    HEIC_COLOR,
    MAX_FILE_BYTES,
    MAX_PIXELS,
    encode,
    exif_with_time_and_place,
    make_bad_library,
    noise_image,
    permissions_enforced,
    unlock,
)

# Files whose failure `open_image` reports itself; "nested/back" is a folder the scan refuses.
BAD_FILE_REASONS = {path: reason for path, reason in BAD_FILES.items() if path != "nested/back"}


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("imaging") / "library"
    make_bad_library(root)
    yield root
    unlock(root)


def reason_for(
    source: Path | bytes, *, max_pixels: int = MAX_PIXELS, max_bytes: int | None = None
) -> str:
    with pytest.raises(PhotoUnreadable) as caught:
        open_image(source, max_pixels=max_pixels, max_bytes=max_bytes)
    return caught.value.reason


@pytest.mark.parametrize("rel_path", sorted(GOOD_PHOTOS))
def test_open_image_decodes_every_good_photo_upright(library: Path, rel_path: str) -> None:
    img = open_image(library / rel_path, max_pixels=MAX_PIXELS, max_bytes=MAX_FILE_BYTES)
    assert img.size == GOOD_PHOTOS[rel_path]
    assert img.im is not None  # fully loaded: the file is already closed


@pytest.mark.parametrize("rel_path", sorted(GOOD_PHOTOS))
def test_probe_image_agrees_with_open_image(library: Path, rel_path: str) -> None:
    info = probe_image(library / rel_path, max_pixels=MAX_PIXELS)
    assert (info.width, info.height) == GOOD_PHOTOS[rel_path]


def test_gif_gives_its_first_frame(library: Path) -> None:
    img = open_image(library / "animated.gif", max_pixels=MAX_PIXELS)
    assert img.convert("RGB").getpixel((5, 5)) == GIF_FIRST_FRAME


def test_heic_is_decoded(library: Path) -> None:
    register_heif()
    register_heif()  # idempotent
    img = open_image(library / "phone.heic", max_pixels=MAX_PIXELS)
    pixel = img.convert("RGB").getpixel((10, 10))
    assert isinstance(pixel, tuple)
    assert all(abs(got - want) <= 8 for got, want in zip(pixel, HEIC_COLOR, strict=True))


def test_open_image_reads_bytes_too(library: Path) -> None:
    img = open_image((library / "photo.webp").read_bytes(), max_pixels=MAX_PIXELS)
    assert img.size == (150, 90)


@pytest.mark.parametrize("rel_path", sorted(BAD_FILE_REASONS))
def test_open_image_names_why_a_bad_file_fails(library: Path, rel_path: str) -> None:
    assert reason_for(library / rel_path, max_bytes=MAX_FILE_BYTES) == BAD_FILE_REASONS[rel_path]


def test_pixel_limit_is_the_argument_and_checked_before_decoding(library: Path) -> None:
    limit_before = Image.MAX_IMAGE_PIXELS
    bomb = library / "bad/bomb.png"  # header claims 5000x5000, data holds 8x8
    assert reason_for(bomb, max_pixels=24_999_999) == "too_many_pixels"
    # Allowed by a higher limit, it gets decoded, and the missing pixel data shows.
    assert reason_for(bomb, max_pixels=25_000_000) in {"truncated", "corrupt"}
    assert limit_before == Image.MAX_IMAGE_PIXELS


def test_bytes_sources_are_checked_like_files() -> None:
    assert reason_for(b"") == "empty"
    assert reason_for(b"plain text, not an image") == "corrupt"
    jpeg = encode(noise_image(64, 64), "JPEG")
    assert reason_for(jpeg, max_bytes=len(jpeg) - 1) == "too_large"
    assert reason_for(jpeg[: len(jpeg) // 2]) == "truncated"


def test_missing_path_and_folder(tmp_path: Path) -> None:
    assert reason_for(tmp_path / "nothing.jpg") == "not_found"
    (tmp_path / "album.jpg").mkdir()
    assert reason_for(tmp_path / "album.jpg") == "not_a_file"


def test_unreadable_file_is_permission_denied(library: Path) -> None:
    if not permissions_enforced(library):
        pytest.skip("this process reads chmod 000 files (root); test_scan covers it in a child")
    assert reason_for(library / "locked.jpg") == "permission_denied"


def test_an_image_format_we_do_not_accept_is_corrupt(tmp_path: Path) -> None:
    ppm = tmp_path / "scan.jpg"  # a PPM under an image name: decoders are limited on purpose
    ppm.write_bytes(encode(Image.new("RGB", (8, 8)), "PPM"))
    assert reason_for(ppm) == "corrupt"


def test_read_metadata_returns_time_and_position(library: Path) -> None:
    taken_at, lat, lon = read_metadata(open_image(library / EXIF_PHOTO, max_pixels=MAX_PIXELS))
    assert taken_at == EXIF_TAKEN_AT
    assert lat == pytest.approx(EXIF_LAT, abs=1e-6)
    assert lon == pytest.approx(EXIF_LON, abs=1e-6)


def test_read_metadata_south_and_west_are_negative() -> None:
    jpeg = encode(Image.new("RGB", (8, 8)), "JPEG", exif=exif_with_time_and_place(-33.8688, -70.5))
    _, lat, lon = read_metadata(open_image(jpeg, max_pixels=MAX_PIXELS))
    assert lat == pytest.approx(-33.8688, abs=1e-6)
    assert lon == pytest.approx(-70.5, abs=1e-6)


def test_read_metadata_falls_back_to_datetime() -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.DateTime] = "2019-07-08 09:10:11"  # dashes, as some software writes
    jpeg = encode(Image.new("RGB", (8, 8)), "JPEG", exif=exif)
    taken_at, lat, lon = read_metadata(open_image(jpeg, max_pixels=MAX_PIXELS))
    assert (taken_at, lat, lon) == (datetime(2019, 7, 8, 9, 10, 11), None, None)


def test_read_metadata_ignores_garbage_values() -> None:
    exif = Image.Exif()
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = "0000:00:00 00:00:00"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (IFDRational(0, 0), IFDRational(0, 0), IFDRational(0, 0))
    gps[ExifTags.GPS.GPSLongitudeRef] = "Q"
    gps[ExifTags.GPS.GPSLongitude] = (IFDRational(1, 1), IFDRational(0, 1), IFDRational(0, 1))
    jpeg = encode(Image.new("RGB", (8, 8)), "JPEG", exif=exif)
    assert read_metadata(open_image(jpeg, max_pixels=MAX_PIXELS)) == (None, None, None)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow's own, expected here
@pytest.mark.parametrize(
    "blob",
    [os.urandom(64), b"Exif\x00\x00" + os.urandom(64), b"II*\x00\x08\x00\x00\x00\x02\x00"],
    ids=["random", "exif-header-random", "short-ifd"],
)
def test_read_metadata_survives_a_garbage_exif_block(blob: bytes) -> None:
    img = Image.new("RGB", (4, 4))
    img.info["exif"] = blob
    assert read_metadata(img) == (None, None, None)


def test_garbage_exif_does_not_make_a_good_jpeg_unreadable() -> None:
    jpeg = encode(Image.new("RGB", (16, 8)), "JPEG", exif=b"Exif\x00\x00" + os.urandom(80))
    assert open_image(jpeg, max_pixels=MAX_PIXELS).size == (16, 8)


def test_read_metadata_without_exif(library: Path) -> None:
    assert read_metadata(open_image(library / "bitmap.bmp", max_pixels=MAX_PIXELS)) == (
        None,
        None,
        None,
    )


def test_thumbnail_jpeg_shrinks_a_large_photo() -> None:
    big = encode(noise_image(5000, 3000), "JPEG")
    thumb = Image.open(io.BytesIO(thumbnail_jpeg(big, 512, max_pixels=MAX_PIXELS)))
    assert thumb.format == "JPEG"
    assert thumb.mode == "RGB"
    assert thumb.size == (512, 307)
    thumb.load()


def test_thumbnail_jpeg_from_an_image_leaves_it_alone() -> None:
    img = Image.new("RGB", (3000, 5000), "purple")
    thumb = Image.open(io.BytesIO(thumbnail_jpeg(img, 400, max_pixels=MAX_PIXELS)))
    assert thumb.size == (240, 400)
    assert img.size == (3000, 5000)


def test_thumbnail_jpeg_never_enlarges_and_is_upright(library: Path) -> None:
    small = thumbnail_jpeg(library / "rotated.jpg", 512, max_pixels=MAX_PIXELS)
    assert Image.open(io.BytesIO(small)).size == (40, 60)


def test_thumbnail_jpeg_flattens_transparency_onto_white(library: Path) -> None:
    thumb = thumbnail_jpeg(library / "plain.png", 100, max_pixels=MAX_PIXELS)
    red, green, blue = Image.open(io.BytesIO(thumb)).getpixel((50, 25))  # type: ignore[misc]
    assert abs(red - 127) <= 4 and abs(green - 191) <= 4 and abs(blue - 127) <= 4


def test_thumbnail_jpeg_drops_gps(library: Path) -> None:
    thumb = thumbnail_jpeg(library / EXIF_PHOTO, 100, max_pixels=MAX_PIXELS)
    assert read_metadata(Image.open(io.BytesIO(thumb))) == (None, None, None)


def test_thumbnail_jpeg_refuses_bad_input(library: Path) -> None:
    with pytest.raises(PhotoUnreadable) as caught:
        thumbnail_jpeg(library / "bad/bomb.png", 256, max_pixels=MAX_PIXELS)
    assert caught.value.reason == "too_many_pixels"
    with pytest.raises(ValueError, match="max_side"):
        thumbnail_jpeg(library / EXIF_PHOTO, 0, max_pixels=MAX_PIXELS)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.jpg", True),
        ("B.JPEG", True),
        ("c.HeIc", True),
        ("d.heif", True),
        ("e.webp", True),
        ("f.mp4", False),
        ("notes.txt", False),
        ("jpg", False),
        ("archive.jpg.zip", False),
    ],
)
def test_has_image_extension(name: str, expected: bool) -> None:
    assert has_image_extension(name) is expected


def test_an_unreadable_photo_has_a_typed_reason() -> None:
    error = PhotoUnreadable("a.jpg", "truncated", "12 bytes")
    assert error.reason is Reason.TRUNCATED and error.reason == "truncated"
    with pytest.raises(ValueError):  # a reason no one shows: a bug, not a photo
        PhotoUnreadable("a.jpg", "trunkated")
    assert Reason.parse("too_large") is Reason.TOO_LARGE
    assert Reason.parse("from_a_newer_server") is Reason.UNREADABLE


@pytest.mark.parametrize(
    "written", ["9999:12:31 23:59:59", "2999:01:01 00:00:00", "1800:01:01 00:00:00"]
)
def test_an_impossible_exif_time_is_unknown_and_says_so(written: str) -> None:
    """A camera whose clock was never set: year 9999, the future, before photography."""
    exif = Image.Exif()
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = written
    info = probe_image(encode(Image.new("RGB", (8, 8)), "JPEG", exif=exif), max_pixels=MAX_PIXELS)
    assert (info.taken_at, info.date_ignored) == (None, True)


def test_a_time_of_today_or_tomorrow_is_kept() -> None:
    """Tomorrow too: a camera set to a time zone ahead of this machine's."""
    exif = Image.Exif()
    soon = datetime.now().replace(microsecond=0) + timedelta(hours=20)
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = soon.strftime(
        "%Y:%m:%d %H:%M:%S"
    )
    info = probe_image(encode(Image.new("RGB", (8, 8)), "JPEG", exif=exif), max_pixels=MAX_PIXELS)
    assert (info.taken_at, info.date_ignored) == (soon, False)
