"""Generate a small photo library full of the files real libraries contain, good and bad.

`make_bad_library(root)` writes it and returns the skip counts a scan should report. The module's
constants say what a scan should find; scan it with `MAX_FILE_BYTES` and `MAX_PIXELS`.

Permissions: the chmod 000 file and folder are unreadable only for a reader the kernel holds to
file modes. Root (with CAP_DAC_OVERRIDE, as in this project's containers) reads them anyway, so
for root they are good photos. `permissions_enforced()` finds out by trying, not by guessing from
the uid; tests that need the permission_denied case run the scan as an unprivileged user.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import struct
import zlib
from collections import Counter
from datetime import datetime
from pathlib import Path

import pillow_heif
from PIL import ExifTags, Image
from PIL.TiffImagePlugin import IFDRational

MAX_FILE_BYTES = 1_000_000
MAX_PIXELS = 20_000_000

EXIF_PHOTO = "exif.jpg"
EXIF_TAKEN_AT = datetime(2023, 5, 1, 14, 30, 15)  # DateTimeOriginal; DateTime says 2020
EXIF_LAT = 31.2304  # 31° 13' 49.44" N (Shanghai)
EXIF_LON = 121.4737  # 121° 28' 25.32" E
GIF_FIRST_FRAME = (255, 0, 0)  # the second frame is blue
HEIC_COLOR = (0, 0, 255)

# rel_path -> (width, height) as displayed, for every photo a scan must find.
GOOD_PHOTOS: dict[str, tuple[int, int]] = {
    EXIF_PHOTO: (320, 240),
    "plain.png": (200, 100),
    "link_to_plain.png": (200, 100),  # symlink to plain.png
    "photo.webp": (150, 90),
    "bitmap.bmp": (64, 32),
    "animated.gif": (40, 30),
    "phone.heic": (64, 48),
    "rotated.jpg": (40, 60),  # stored 60x40 with EXIF Orientation 6
    "UPPER.JPG": (30, 20),
    "nested/landscape.jpeg": (120, 80),
    "nested/deeper/copy.jpg": (320, 240),  # same bytes as exif.jpg
}
# Good photos behind chmod 000: readable only where permissions are not enforced.
LOCKED_PHOTOS: dict[str, tuple[int, int]] = {
    "locked.jpg": (32, 32),
    "locked_dir/inside.jpg": (32, 32),
}
LOCKED_SKIPS: dict[str, str] = {
    "locked.jpg": "permission_denied",
    "locked_dir": "permission_denied",
}
# rel_path -> reason for everything a scan must count as skipped, permissions aside.
BAD_FILES: dict[str, str] = {
    "bad/empty.jpg": "empty",
    "bad/truncated.jpg": "truncated",
    "bad/truncated.png": "truncated",
    "bad/random.png": "corrupt",
    "bad/text.jpg": "corrupt",
    "bad/bomb.png": "too_many_pixels",  # header says 5000x5000: over MAX_PIXELS
    "bad/bomb_huge.png": "too_many_pixels",  # 30000x30000: over Pillow's own hard limit too
    "bad/huge.jpg": "too_large",
    "bad/pipe.jpg": "not_a_file",
    "bad/gone.jpg": "broken_symlink",
    "bad/self.jpg": "symlink_loop",
    "nested/back": "symlink_loop",  # symlink to the library root
}


def expected_photos(*, permissions_enforced: bool) -> dict[str, tuple[int, int]]:
    """rel_path -> displayed (width, height) of every photo a scan must list."""
    return GOOD_PHOTOS if permissions_enforced else {**GOOD_PHOTOS, **LOCKED_PHOTOS}


def expected_skipped_paths(*, permissions_enforced: bool) -> dict[str, str]:
    """rel_path -> reason of everything a scan must count as skipped."""
    return {**BAD_FILES, **LOCKED_SKIPS} if permissions_enforced else dict(BAD_FILES)


def expected_skips(*, permissions_enforced: bool) -> dict[str, int]:
    """Skip counts by reason a scan must report."""
    paths = expected_skipped_paths(permissions_enforced=permissions_enforced)
    return dict(Counter(paths.values()))


def permissions_enforced(scratch_dir: Path) -> bool:
    """True when this process cannot read a chmod 000 file (False for root, normally)."""
    probe = scratch_dir / ".permission-probe"
    probe.write_bytes(b"x")
    probe.chmod(0)
    try:
        probe.read_bytes()
    except PermissionError:
        return True
    finally:
        probe.chmod(0o600)
        probe.unlink()
    return False


def make_bad_library(root: Path) -> dict[str, int]:
    """Write the library under `root` and return the skip counts expected for this process."""
    root.mkdir(parents=True, exist_ok=True)
    _write_good_photos(root)
    _write_bad_files(root / "bad")
    _write_ignored_files(root)
    _write_locked(root)
    return expected_skips(permissions_enforced=permissions_enforced(root))


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """An RGB image of random pixels, so encoders cannot shrink it to nothing."""
    pixels = random.Random(seed).randbytes(width * height * 3)
    return Image.frombytes("RGB", (width, height), pixels)


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    """Encode `img` in memory with Pillow (HEIF through pillow_heif)."""
    pillow_heif.register_heif_opener()
    out = io.BytesIO()
    img.save(out, fmt, **params)
    return out.getvalue()


def exif_with_time_and_place(lat: float = EXIF_LAT, lon: float = EXIF_LON) -> Image.Exif:
    """EXIF with DateTimeOriginal, an older DateTime, and a GPS position as D/M/S rationals."""
    exif = Image.Exif()
    exif[ExifTags.Base.DateTime] = "2020:01:01 00:00:00"
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = EXIF_TAKEN_AT.strftime(
        "%Y:%m:%d %H:%M:%S"
    )
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N" if lat >= 0 else "S"
    gps[ExifTags.GPS.GPSLatitude] = _dms(abs(lat))
    gps[ExifTags.GPS.GPSLongitudeRef] = "E" if lon >= 0 else "W"
    gps[ExifTags.GPS.GPSLongitude] = _dms(abs(lon))
    return exif


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny 8x8 PNG whose IHDR is patched to claim `width` x `height` (a decompression bomb)."""
    data = bytearray(encode(Image.new("1", (8, 8)), "PNG"))
    # IHDR is the first chunk: length at 8, type at 12, width/height at 16..24, CRC at 29..33.
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _dms(degrees: float) -> tuple[IFDRational, IFDRational, IFDRational]:
    whole = int(degrees)
    minutes = int((degrees - whole) * 60)
    seconds = round(((degrees - whole) * 60 - minutes) * 60 * 100)
    return IFDRational(whole, 1), IFDRational(minutes, 1), IFDRational(seconds, 100)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _write_good_photos(root: Path) -> None:
    exif_jpeg = encode(noise_image(320, 240), "JPEG", exif=exif_with_time_and_place())
    _write(root / EXIF_PHOTO, exif_jpeg)
    _write(root / "nested/deeper/copy.jpg", exif_jpeg)
    _write(root / "plain.png", encode(Image.new("RGBA", (200, 100), (0, 128, 0, 128)), "PNG"))
    (root / "link_to_plain.png").symlink_to("plain.png")
    (root / "alias").symlink_to("nested/deeper", target_is_directory=True)
    _write(root / "photo.webp", encode(noise_image(150, 90, seed=1), "WEBP"))
    _write(root / "bitmap.bmp", encode(Image.new("RGB", (64, 32), "yellow"), "BMP"))
    _write(root / "animated.gif", _animated_gif())
    _write(root / "phone.heic", encode(Image.new("RGB", (64, 48), HEIC_COLOR), "HEIF"))
    _write(root / "rotated.jpg", _rotated_jpeg())
    _write(root / "UPPER.JPG", encode(Image.new("RGB", (30, 20), "white"), "JPEG"))
    _write(root / "nested/landscape.jpeg", encode(noise_image(120, 80, seed=2), "JPEG"))


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (40, 30), GIF_FIRST_FRAME), Image.new("RGB", (40, 30), "blue")]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


def _rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # display rotated 90° clockwise
    return encode(Image.new("RGB", (60, 40), "gray"), "JPEG", exif=exif)


def _write_bad_files(bad: Path) -> None:
    jpeg = encode(noise_image(320, 240, seed=3), "JPEG")
    png = encode(noise_image(160, 120, seed=4), "PNG")
    _write(bad / "empty.jpg", b"")
    _write(bad / "truncated.jpg", jpeg[: len(jpeg) // 2])
    _write(bad / "truncated.png", png[: len(png) // 2])
    _write(bad / "random.png", random.Random(5).randbytes(4096))
    _write(bad / "text.jpg", b"This is not a photo, just a note with the wrong name.\n" * 10)
    _write(bad / "bomb.png", png_claiming_size(5000, 5000))
    _write(bad / "bomb_huge.png", png_claiming_size(30000, 30000))
    # A real JPEG (decoders ignore what follows its end marker) that is over the byte limit.
    _write(bad / "huge.jpg", jpeg + bytes(MAX_FILE_BYTES))
    os.mkfifo(bad / "pipe.jpg")  # opening it would block forever: the scan must not
    (bad / "gone.jpg").symlink_to("deleted-long-ago.jpg")
    (bad / "self.jpg").symlink_to("self.jpg")
    (bad.parent / "nested/back").symlink_to("..", target_is_directory=True)


def _write_ignored_files(root: Path) -> None:
    """Files a scan passes over without counting: hidden, NAS/archive junk, not images."""
    good = (root / EXIF_PHOTO).read_bytes()
    for rel_path in (".hidden.jpg", ".secret/x.jpg", "@eaDir/thumb.jpg", "#recycle/old.jpg"):
        _write(root / rel_path, good)
    _write(root / ".thumbnails/t.jpg", b"junk")
    _write(root / "__MACOSX/._exif.jpg", b"\x00\x05\x16\x07 resource fork")
    _write(root / "nested/.DS_Store", b"junk")
    _write(root / "notes.txt", "今天的照片".encode())
    _write(root / "clip.mp4", random.Random(6).randbytes(2048))
    _write(root / "README", b"no extension")


def _write_locked(root: Path) -> None:
    small = encode(noise_image(32, 32, seed=7), "JPEG")
    _write(root / "locked.jpg", small)
    _write(root / "locked_dir/inside.jpg", small)
    (root / "locked.jpg").chmod(0)
    (root / "locked_dir").chmod(0)


def unlock(root: Path) -> None:
    """Give back the permissions `make_bad_library` took, so the folder can be deleted."""
    for rel_path in LOCKED_SKIPS:
        path = root / rel_path
        if path.exists():
            path.chmod(0o755 if path.is_dir() else 0o644)


def remove_library(root: Path) -> None:
    """Delete a generated library, locked parts included."""
    unlock(root)
    shutil.rmtree(root, ignore_errors=True)
