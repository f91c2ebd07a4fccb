"""Safe image reading: every way a file can fail becomes a `PhotoUnreadable` with a stable reason.

`decode_image` is the one place PeiTu decodes an image (the scan, the describers, the visual
index, thumbnails, uploads and the bot all go through it), and `DECODE_ERRORS` the one list of
what Pillow and its plugins raise on bad data.

Reason keys (`PhotoUnreadable.reason`, also the keys of a scan's skip counts) are the values of
`Reason`. Only the formats in `IMAGE_EXTENSIONS` are decoded: a file with an image extension that
Pillow would read through another plugin (EPS, PSD, ...) is refused as "corrupt", which keeps the
attack surface to the decoders a photo library needs.

Pixel limits: `max_pixels` is checked against the header's width x height before any pixel is
decoded. Pillow's own global guard (`Image.MAX_IMAGE_PIXELS`) is left untouched, so it still
applies on top: images over twice that (about 179 million pixels by default) are refused as
"too_many_pixels" whatever `max_pixels` says.
"""

from __future__ import annotations

import errno
import io
import logging
import math
import os
import stat
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any, Protocol

import pillow_heif
from PIL import ExifTags, Image, ImageFile, ImageOps

from index.errors import PhotoUnreadable
from index.errors import Reason as Reason  # re-exported: callers name reasons from here

logger = logging.getLogger(__name__)


IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {"jpg", "jpeg", "png", "webp", "bmp", "gif", "heic", "heif", "tif", "tiff"}
)
# Pillow format names for those extensions. Multi-picture camera JPEGs (MPO) come in as JPEG.
# TIFF (scans) gives its first page; 16-bit scans are scaled to 8 bits (`eight_bit`).
_ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "HEIF", "TIFF")
# Exceptions Pillow and its plugins raise on bad data (the only such list in PeiTu). A bad file
# must never escape as anything but `PhotoUnreadable`; MemoryError and KeyboardInterrupt are
# deliberately not in this list.
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    TypeError,
    EOFError,
    IndexError,
    KeyError,
    ZeroDivisionError,
    RuntimeError,
    struct.error,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,  # raised only where warnings are turned into errors
)
_EXIF_ERRORS = DECODE_ERRORS
# The scan decodes a JPEG at the smallest scale (1/2 ... 1/8) that keeps both sides at least 128
# pixels: every byte is still decoded (truncation shows), and the perceptual hash is computed from
# this very image (`index.library.dedup`), so its values must not change with it.
PREVIEW_BOX = (128, 128)
_FIRST_PHOTOGRAPH = datetime(1826, 1, 1)
_NEGATIVE_REFS = {ExifTags.GPS.GPSLatitudeRef: "S", ExifTags.GPS.GPSLongitudeRef: "W"}
_POSITIVE_REFS = {ExifTags.GPS.GPSLatitudeRef: "N", ExifTags.GPS.GPSLongitudeRef: "E"}

ImageSource = Path | str | bytes
_heif_registered = False


@dataclass(frozen=True)
class ImageInfo:
    """What the index needs from a photo: displayed size and EXIF time and place."""

    width: int
    height: int
    taken_at: datetime | None
    gps_lat: float | None
    gps_lon: float | None
    date_ignored: bool = False  # EXIF gave a time that cannot be (`plausible_time`)


@dataclass(frozen=True)
class DecodedPhoto:
    """A decoded photo: the image upright per EXIF, and its displayed full size, time and place.

    `image` is decoded at reduced scale when a draft box was asked for (JPEG only); `info`
    gives the size of the whole photo, as it is displayed, whatever the scale."""

    image: Image.Image
    info: ImageInfo


@dataclass(frozen=True)
class DecodeBudget:
    """What decoding one image may cost, checked before any pixel is decoded: the pixels and
    the memory of the image as it will be decoded (a JPEG at its reduced scale, anything else
    whole). For images someone sends as a query (`QUERY_BUDGET`), which, unlike a library
    photo, anyone allowed to ask may send, many at a time."""

    max_pixels: int
    max_bytes: int


# A PNG, WebP, TIFF or HEIC cannot be decoded at a reduced scale: its memory is its size, so a
# query of those may have 50 megapixels (the library 120) and take 192 MB (48 megapixels of
# colour, which Pillow keeps in 4 bytes). A JPEG, decoded at 1/8 scale, may be as large as the
# library allows.
QUERY_BUDGET = DecodeBudget(max_pixels=50_000_000, max_bytes=192 * 1024 * 1024)
# Bytes a pixel takes in Pillow's memory, by mode (every mode not named takes 4: RGB too).
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
# EXIF orientation -> the transposition that shows the image upright (as `ImageOps.exif_transpose`).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class PhotoReader(Protocol):
    """How the scan reads a photo (`read_photo`, or a wrapper of it that counts)."""

    def __call__(
        self, source: ImageSource, *, max_pixels: int, max_bytes: int | None = None
    ) -> DecodedPhoto: ...


def register_heif() -> None:
    """Teach Pillow to open HEIC/HEIF files (idempotent; the open functions call it too)."""
    global _heif_registered
    if not _heif_registered:
        pillow_heif.register_heif_opener()
        _heif_registered = True


def has_image_extension(name: str) -> bool:
    """True when `name` ends in one of `IMAGE_EXTENSIONS`, in any letter case."""
    _, dot, suffix = name.rpartition(".")
    return bool(dot) and suffix.lower() in IMAGE_EXTENSIONS


def check_image_file(path: Path | str, *, max_bytes: int | None = None) -> os.stat_result:
    """Stat `path` (following symlinks) and refuse what cannot be a readable photo.

    Never opens the file, so it is safe on FIFOs and devices. Returns the followed stat.
    Raises `PhotoUnreadable` with reason broken_symlink, symlink_loop, not_found,
    permission_denied, not_a_file, empty or too_large.
    """
    label = str(path)
    info = _stat_following_links(path, label)
    if not stat.S_ISREG(info.st_mode):
        raise PhotoUnreadable(label, Reason.NOT_A_FILE, _file_kind(info.st_mode))
    _check_byte_count(info.st_size, label, max_bytes)
    return info


def open_image(
    source: ImageSource, *, max_pixels: int, max_bytes: int | None = None
) -> Image.Image:
    """Open and fully decode a photo from a path or bytes, upright per its EXIF orientation.

    Animated images give their first frame. The file is closed on return, so the result cannot
    seek to other frames. Raises `PhotoUnreadable` (see `Reason`) for anything that is not a
    readable image within `max_pixels` (and `max_bytes`, when given).
    """
    return decode_image(source, max_pixels=max_pixels, max_bytes=max_bytes).image


def read_photo(
    source: ImageSource, *, max_pixels: int, max_bytes: int | None = None
) -> DecodedPhoto:
    """What the scan reads of a photo: decoded completely but at reduced scale (`PREVIEW_BOX`),
    which still reads every byte and so still catches truncation. Raises `PhotoUnreadable`."""
    return decode_image(source, max_pixels=max_pixels, max_bytes=max_bytes, draft_box=PREVIEW_BOX)


def probe_image(source: ImageSource, *, max_pixels: int, max_bytes: int | None = None) -> ImageInfo:
    """Check that a photo (a path or its bytes) decodes completely and read its displayed size,
    time and place (`read_photo`'s `info`). Raises `PhotoUnreadable` like `open_image`."""
    return read_photo(source, max_pixels=max_pixels, max_bytes=max_bytes).info


def decode_image(
    source: ImageSource,
    *,
    max_pixels: int,
    max_bytes: int | None = None,
    draft_box: tuple[int, int] | None = None,
) -> DecodedPhoto:
    """Decode a photo from a path or bytes: the one decode path of PeiTu.

    In order: the file is checked (`check_image_file`; `max_bytes`), only the header is read
    and the format must be one of the allowed ones, `max_pixels` is checked against the
    header's width x height before any pixel is decoded, the image is decoded (a JPEG at the
    smallest scale that keeps both sides at least `draft_box`, when given), and it is turned
    upright per its EXIF orientation (garbage EXIF is ignored). Animated images give their first
    frame; the file is closed on return. Modes are left as decoded (see `eight_bit`, `flat_rgb`).
    Raises `PhotoUnreadable` with a `Reason` for anything that is not such an image.
    """
    label = _label(source)
    with _stream(source, label, max_bytes) as stream, _decode_errors(label):
        img = _open_header(stream, label, max_pixels)
        width, height = img.size
        if draft_box is not None:
            img.draft(None, draft_box)
        img.load()
        if _orientation(img) in {5, 6, 7, 8}:  # rotated a quarter turn: display swaps sides
            width, height = height, width
        written, lat, lon = read_metadata(img)
        taken_at = plausible_time(written)
        info = ImageInfo(
            width, height, taken_at, lat, lon, written is not None and taken_at is None
        )
    _apply_orientation(img, label)
    return DecodedPhoto(img, info)


def read_metadata(img: Image.Image) -> tuple[datetime | None, float | None, float | None]:
    """Return (taken_at, gps_lat, gps_lon) from EXIF; None for whatever is missing or garbage.

    taken_at is DateTimeOriginal, else DateTime, as naive camera-local time. GPS is in decimal
    degrees, south and west negative.
    """
    exif = _safe_exif(img)
    if exif is None:
        return None, None, None
    lat, lon = _gps_position(exif)
    return _taken_at(exif), lat, lon


def plausible_time(taken_at: datetime | None, now: datetime | None = None) -> datetime | None:
    """`taken_at`, or None when no photo can have been taken then: after tomorrow (a camera
    whose clock was never set writes 9999 or a year ahead; a day covers time zones), or before
    the first photograph (1826)."""
    if taken_at is None:
        return None
    latest = (now or datetime.now()) + timedelta(days=1)
    return taken_at if _FIRST_PHOTOGRAPH <= taken_at <= latest else None


def thumbnail_jpeg(
    source: ImageSource | Image.Image,
    max_side: int,
    *,
    max_pixels: int,
    max_bytes: int | None = None,
) -> bytes:
    """Encode an upright RGB JPEG (quality 85) whose long side is at most `max_side`.

    Never enlarges. EXIF (and so GPS) is not copied into the output; the ICC profile is.
    Transparent areas become white. Raises `PhotoUnreadable` for an unreadable source.
    """
    if max_side < 1:
        raise ValueError(f"max_side must be at least 1, got {max_side}")
    if isinstance(source, Image.Image):
        img = source
    else:
        box = (max_side, max_side)
        img = decode_image(source, max_pixels=max_pixels, max_bytes=max_bytes, draft_box=box).image
    small = _to_rgb(_fit_within(eight_bit(img), max_side))
    out = io.BytesIO()
    small.save(out, "JPEG", quality=85, icc_profile=img.info.get("icc_profile"))
    return out.getvalue()


def eight_bit(img: Image.Image) -> Image.Image:
    """`img` with 8 bits a channel, 16-bit values scaled rather than clipped.

    A 16-bit greyscale PNG or TIFF opens in mode "I;16" (or "I"), and Pillow's `convert("L")`
    or `convert("RGB")` clips every value above 255: the photo would turn all white. 16-bit RGB
    opens as "RGB" already scaled by Pillow. Other modes are returned as they are.
    """
    if img.mode.startswith("I;16"):
        return img.convert("I").point(lambda value: value / 257).convert("L")
    if img.mode == "I":
        _, high = img.getextrema()
        scale = 1 / 257 if isinstance(high, int | float) and high > 255 else 1
        return img.point(lambda value: value * scale).convert("L")
    return img


def _label(source: ImageSource) -> str:
    return "<bytes>" if isinstance(source, bytes) else str(source)


@contextmanager
def _stream(source: ImageSource, label: str, max_bytes: int | None) -> Iterator[IO[bytes]]:
    if isinstance(source, bytes):
        _check_byte_count(len(source), label, max_bytes)
        yield io.BytesIO(source)
        return
    check_image_file(source, max_bytes=max_bytes)
    try:
        handle = open(source, "rb")  # noqa: SIM115 - closed by the `with` below
    except OSError as error:
        raise PhotoUnreadable(label, _os_reason(error), _os_detail(error)) from error
    with handle:
        yield handle


@contextmanager
def _decode_errors(label: str) -> Iterator[None]:
    try:
        yield
    except DECODE_ERRORS as error:
        raise PhotoUnreadable(label, _decode_reason(error), str(error)) from error


def _open_header(stream: IO[bytes], label: str, max_pixels: int) -> ImageFile.ImageFile:
    """Read only the header, and refuse the image before any pixel is decoded if too big."""
    register_heif()
    img = Image.open(stream, formats=_ALLOWED_FORMATS)
    width, height = img.size
    if width < 1 or height < 1:
        raise PhotoUnreadable(label, Reason.CORRUPT, f"header says {width}x{height}")
    if width * height > max_pixels:
        detail = f"{width}x{height} is over the limit of {max_pixels} pixels"
        raise PhotoUnreadable(label, Reason.TOO_MANY_PIXELS, detail)
    return img


def _check_budget(img: Image.Image, label: str, budget: DecodeBudget) -> None:
    """Refuse, before decoding, an image whose decode (at the scale set) costs over `budget`."""
    width, height = img.size
    cost = width * height * _BYTES_PER_PIXEL.get(img.mode, 4)
    if width * height > budget.max_pixels or cost > budget.max_bytes:
        detail = (
            f"{width}x{height} ({img.mode}) would take {cost >> 20} MB to decode; a query image "
            f"may take {budget.max_pixels // 1_000_000} megapixels and {budget.max_bytes >> 20} MB"
        )
        raise PhotoUnreadable(label, Reason.TOO_MANY_PIXELS, detail)


def _decode_reason(error: BaseException) -> Reason:
    if isinstance(error, Image.DecompressionBombError | Image.DecompressionBombWarning):
        return Reason.TOO_MANY_PIXELS
    if isinstance(error, OSError) and error.errno is not None:  # the disk, not the data
        return _os_reason(error)
    text = str(error).lower()
    if isinstance(error, EOFError) or "truncated" in text or "end of file" in text:
        return Reason.TRUNCATED
    return Reason.CORRUPT


def _stat_following_links(path: Path | str, label: str) -> os.stat_result:
    try:
        link = os.lstat(path)
        if not stat.S_ISLNK(link.st_mode):
            return link
        return os.stat(path)
    except FileNotFoundError as error:
        # lstat found the name, so it is the link's target that is missing.
        reason = Reason.BROKEN_SYMLINK if os.path.lexists(path) else Reason.NOT_FOUND
        raise PhotoUnreadable(label, reason, _os_detail(error)) from error
    except OSError as error:
        raise PhotoUnreadable(label, _os_reason(error), _os_detail(error)) from error


def _check_byte_count(size: int, label: str, max_bytes: int | None) -> None:
    if size == 0:
        raise PhotoUnreadable(label, Reason.EMPTY, "0 bytes")
    if max_bytes is not None and size > max_bytes:
        detail = f"{size} bytes is over the limit of {max_bytes}"
        raise PhotoUnreadable(label, Reason.TOO_LARGE, detail)


def _os_reason(error: OSError) -> Reason:
    """Map an OS error from stat, open, read or scandir to a reason key."""
    if isinstance(error, PermissionError):
        return Reason.PERMISSION_DENIED
    if isinstance(error, FileNotFoundError):
        return Reason.NOT_FOUND
    if isinstance(error, IsADirectoryError):
        return Reason.NOT_A_FILE
    if error.errno == errno.ELOOP:
        return Reason.SYMLINK_LOOP
    return Reason.IO_ERROR


def _os_detail(error: OSError) -> str:
    return error.strerror or str(error)


def _file_kind(mode: int) -> str:
    kinds = {stat.S_ISDIR: "directory", stat.S_ISFIFO: "FIFO", stat.S_ISSOCK: "socket"}
    kind = next((name for test, name in kinds.items() if test(mode)), "device or special file")
    return f"a {kind}"


def _safe_exif(img: Image.Image) -> Image.Exif | None:
    try:
        return img.getexif()
    except _EXIF_ERRORS as error:
        logger.debug("ignoring unreadable EXIF: %s", error)
        return None


def _orientation(img: Image.Image) -> int:
    exif = _safe_exif(img)
    value = exif.get(ExifTags.Base.Orientation, 1) if exif is not None else 1
    return value if isinstance(value, int) else 1


def _apply_orientation(img: Image.Image, label: str) -> None:
    try:
        ImageOps.exif_transpose(img, in_place=True)
    except _EXIF_ERRORS as error:  # garbage EXIF must not make a good image unreadable
        logger.debug("%s: ignoring EXIF orientation: %s", label, error)


def _taken_at(exif: Image.Exif) -> datetime | None:
    try:
        original = exif.get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.DateTimeOriginal)
    except _EXIF_ERRORS:
        original = None
    for value in (original, exif.get(ExifTags.Base.DateTime)):
        parsed = _parse_exif_datetime(value)
        if parsed is not None:
            return parsed
    return None


def _parse_exif_datetime(value: Any) -> datetime | None:
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    if not isinstance(value, str):
        return None
    text = value.strip("\x00 ")[:19]
    # The standard says "YYYY:MM:DD HH:MM:SS"; some software writes dashes or slashes.
    text = text[:10].replace("-", ":").replace("/", ":") + text[10:]
    try:
        return datetime.strptime(text, "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None


def _gps_position(exif: Image.Exif) -> tuple[float | None, float | None]:
    try:
        gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
        lat = _gps_degrees(gps, ExifTags.GPS.GPSLatitude, ExifTags.GPS.GPSLatitudeRef)
        lon = _gps_degrees(gps, ExifTags.GPS.GPSLongitude, ExifTags.GPS.GPSLongitudeRef)
    except _EXIF_ERRORS as error:
        logger.debug("ignoring unreadable GPS EXIF: %s", error)
        return None, None
    if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None, None
    if lat == 0 and lon == 0:  # what receivers without a fix write; not a real place
        return None, None
    return round(lat, 7), round(lon, 7)


def _gps_degrees(gps: dict[int, Any], value_tag: int, ref_tag: ExifTags.GPS) -> float | None:
    value = gps.get(value_tag)
    if not isinstance(value, tuple | list) or not 1 <= len(value) <= 3:
        return None
    # degrees, minutes, seconds; a camera may write decimal degrees alone.
    degrees = sum(_rational(part) / 60.0**index for index, part in enumerate(value))
    if not math.isfinite(degrees):
        return None
    ref = gps.get(ref_tag, _POSITIVE_REFS[ref_tag])
    ref = (ref.decode("ascii", errors="replace") if isinstance(ref, bytes) else str(ref)).strip()
    if ref.upper().startswith(_NEGATIVE_REFS[ref_tag]):
        return -degrees
    return degrees if ref.upper().startswith(_POSITIVE_REFS[ref_tag]) else None


def _rational(value: Any) -> float:
    if isinstance(value, tuple) and len(value) == 2:  # (numerator, denominator)
        return value[0] / value[1] if value[1] else math.nan
    return float(value)  # IFDRational (nan for a zero denominator), int or float


def _fit_within(img: Image.Image, max_side: int) -> Image.Image:
    width, height = img.size
    scale = max_side / max(width, height)
    if scale >= 1:
        return img
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


def flat_rgb(img: Image.Image) -> Image.Image:
    """`img` as 8-bit RGB: 16-bit values scaled (`eight_bit`), transparent areas made white."""
    return _to_rgb(eight_bit(img))


def as_flat_rgb(img: Image.Image) -> Image.Image:
    """`flat_rgb`, but `img` itself when it is already plain 8-bit RGB (no copy: for readers
    that do not change it, such as a model's input)."""
    if img.mode == "RGB" and not img.has_transparency_data:
        return img
    return flat_rgb(img)


def _to_rgb(img: Image.Image) -> Image.Image:
    if not img.has_transparency_data:
        return img.convert("RGB")
    rgba = img.convert("RGBA")
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def open_image_at_least(
    source: ImageSource, min_side: int, *, max_pixels: int, max_bytes: int | None = None
) -> Image.Image:
    """Like `open_image`, but a JPEG decodes at the smallest scale (1/2, 1/4, 1/8) that keeps
    both sides at least `min_side`: a phone photo for a 256-pixel model decodes in a tenth of
    the time. Other formats decode at full size."""
    box = (min_side, min_side)
    return decode_image(source, max_pixels=max_pixels, max_bytes=max_bytes, draft_box=box).image


def open_query_image(
    source: ImageSource,
    min_side: int,
    *,
    max_pixels: int,
    max_bytes: int | None = None,
    budget: DecodeBudget | None = QUERY_BUDGET,
) -> Image.Image:
    """An image to search with, decoded at the size a model needs, upright: a JPEG at the
    smallest scale that keeps both sides at least `min_side`, anything else whole and then
    reduced at once (before it is turned upright or converted, which would copy it whole).
    `budget` (default `QUERY_BUDGET`) refuses, before decoding, what would cost more; None
    for a library photo, which the library's limits already allow."""
    box = (min_side, min_side)
    label = _label(source)
    with _stream(source, label, max_bytes) as stream, _decode_errors(label):
        img = _open_header(stream, label, max_pixels)
        img.draft(None, box)
        if budget is not None:
            _check_budget(img, label, budget)
        img.load()
        orientation = _orientation(img)
        small = _reduced(img, min_side)
    turn = _UPRIGHT.get(orientation)
    return small if turn is None else small.transpose(turn)


def _reduced(img: Image.Image, min_side: int) -> Image.Image:
    """`img` shrunk by a whole factor that keeps both sides at least `min_side` (itself when
    no factor does): a box filter, fast and without a copy at full size."""
    factor = min(img.size) // min_side
    if factor < 2:
        return img
    if img.mode in ("1", "P"):  # `reduce` takes neither: nearest pixels keep the palette
        size = (max(1, img.width // factor), max(1, img.height // factor))
        return img.resize(size, Image.Resampling.NEAREST)
    return img.reduce(factor)
