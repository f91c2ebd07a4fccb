"""Photos made by tests: EXIF time and GPS written in, Chinese text rendered, shapes drawn.

Chinese text needs a CJK font: the first of `fc-list :lang=zh` (CI installs the Debian package
fonts-wqy-microhei; fonts-noto-cjk works too).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from PIL import ExifTags, Image, ImageDraw, ImageFont
from PIL.TiffImagePlugin import IFDRational

from tests.support.badfiles import encode, noise_image

DALI = (25.6065, 100.2676)
HANGZHOU = (30.2741, 120.1551)


def photo_exif(taken_at: datetime | None, position: tuple[float, float] | None) -> Image.Exif:
    """EXIF with DateTimeOriginal and a GPS position (D/M/S rationals), either may be absent."""
    exif = Image.Exif()
    if taken_at is not None:
        exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = taken_at.strftime(
            "%Y:%m:%d %H:%M:%S"
        )
    if position is not None:
        gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
        lat, lon = position
        gps[ExifTags.GPS.GPSLatitudeRef] = "N" if lat >= 0 else "S"
        gps[ExifTags.GPS.GPSLatitude] = _dms(abs(lat))
        gps[ExifTags.GPS.GPSLongitudeRef] = "E" if lon >= 0 else "W"
        gps[ExifTags.GPS.GPSLongitude] = _dms(abs(lon))
    return exif


def _dms(degrees: float) -> tuple[IFDRational, IFDRational, IFDRational]:
    whole = int(degrees)
    minutes = int((degrees - whole) * 60)
    seconds = round(((degrees - whole) * 60 - minutes) * 60 * 100)
    return IFDRational(whole, 1), IFDRational(minutes, 1), IFDRational(seconds, 100)


@dataclass(frozen=True)
class MadePhoto:
    rel_path: str
    description: str
    taken_at: datetime | None = None
    position: tuple[float, float] | None = None
    seed: int = 0


def write_photo(root: Path, photo: MadePhoto, image: Image.Image | None = None) -> Path:
    """Write the photo (noise from its seed unless an image is given) as JPEG or HEIC."""
    path = root / photo.rel_path
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "HEIF" if path.suffix.lower() in (".heic", ".heif") else "JPEG"
    picture = image if image is not None else noise_image(160, 120, seed=photo.seed)
    path.write_bytes(encode(picture, fmt, exif=photo_exif(photo.taken_at, photo.position)))
    return path


def cjk_font_path() -> Path:
    """A font with Chinese glyphs, or a test failure saying which package to install."""
    try:
        listed = subprocess.run(
            ["fc-list", ":lang=zh", "file"], capture_output=True, text=True, check=False
        ).stdout
    except FileNotFoundError:
        listed = ""
    for line in sorted(listed.splitlines()):
        path = Path(line.split(":")[0].strip())
        if path.is_file():
            return path
    pytest.fail("no CJK font found: apt-get install fonts-wqy-microhei (or fonts-noto-cjk)")


def text_image(lines: list[str], size: tuple[int, int] = (720, 400)) -> Image.Image:
    """Dark Chinese text on a light, slightly textured background, 56 px high."""
    font = ImageFont.truetype(str(cjk_font_path()), 56)
    image = Image.new("RGB", size, (246, 243, 236))
    draw = ImageDraw.Draw(image)
    for row, line in enumerate(lines):
        draw.text((40, 50 + row * 110), line, fill=(25, 25, 30), font=font)
    return image


def scene(kind: str, size: tuple[int, int] = (640, 480)) -> Image.Image:
    """A drawn picture with large structure (so a perceptual hash has something to see)."""
    image = Image.new("RGB", size, (70, 130, 200) if kind == "sea" else (40, 110, 50))
    draw = ImageDraw.Draw(image)
    width, height = size
    if kind == "sea":
        draw.rectangle((0, height * 0.55, width, height), fill=(20, 60, 140))
        draw.ellipse((width * 0.6, height * 0.1, width * 0.8, height * 0.37), fill=(250, 200, 60))
        for i in range(6):
            y = height * 0.6 + i * 28
            draw.line((0, y, width, y + 12), fill=(200, 220, 255), width=4)
    else:
        for i in range(5):
            x = i * width / 5
            draw.polygon(
                [(x, height), (x + width / 10, height * 0.3), (x + width / 5, height)],
                fill=(90 + 30 * i, 70, 40),
            )
        draw.rectangle((width * 0.05, height * 0.05, width * 0.3, height * 0.2), fill="white")
    return image
