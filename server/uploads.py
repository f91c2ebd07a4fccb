"""Uploaded photos: checked by content, saved under a safe new name, never over another file."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import unicodedata
import uuid
from dataclasses import dataclass
from pathlib import Path

from fastapi import UploadFile

from index.errors import PhotoUnreadable
from index.imaging import open_image
from server.errors import UploadTooLarge

log = logging.getLogger(__name__)

UPLOADS_FOLDER = "uploads"
# The extensions the library scanner reads, per decoded format; the first is the one we write.
_EXTENSIONS = {
    "JPEG": ("jpg", "jpeg"),
    "MPO": ("jpg", "jpeg"),  # multi-picture camera JPEGs
    "PNG": ("png",),
    "WEBP": ("webp",),
    "BMP": ("bmp",),
    "GIF": ("gif",),
    "HEIF": ("heic", "heif"),
    "TIFF": ("tif", "tiff"),
}
_MAX_STEM_BYTES = 150  # leaves room for a suffix and the extension within the usual 255
_UNSAFE = re.compile(r"[^\w\-.()]+")  # \w is Unicode-aware: 中文 names are kept


@dataclass(frozen=True)
class CheckedImage:
    """An upload that decoded as an image, with what naming and indexing need."""

    data: bytes
    photo_id: str  # sha256 of the bytes, the same identity the library scanner gives
    image_format: str
    width: int
    height: int


async def read_upload(upload: UploadFile, max_bytes: int) -> bytes:
    """The uploaded bytes; `UploadTooLarge` (413) when there are more than `max_bytes`."""
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UploadTooLarge(max_bytes)
    return data


def check_image(data: bytes, *, max_pixels: int, max_bytes: int) -> CheckedImage:
    """Decode the bytes fully; raises `PhotoUnreadable` for anything that is not a photo."""
    image = open_image(data, max_pixels=max_pixels, max_bytes=max_bytes)
    image_format = str(image.format or "")
    if image_format not in _EXTENSIONS:  # open_image allows only library formats; be explicit
        raise PhotoUnreadable("<upload>", "corrupt", f"unsupported format {image_format!r}")
    width, height = image.size
    return CheckedImage(data, hashlib.sha256(data).hexdigest(), image_format, width, height)


def safe_file_name(raw_name: str | None, image_format: str) -> str:
    """A plain, visible file name for an upload, with the extension its content calls for.

    Only the last path component is kept; separators, NUL, control characters and leading dots
    go, so the name can neither leave the uploads folder nor hide from the library scanner.
    """
    name = unicodedata.normalize("NFC", (raw_name or "").replace("\\", "/")).rsplit("/", 1)[-1]
    stem, dot, extension = name.rpartition(".")
    if not dot:
        stem, extension = name, ""
    stem = _UNSAFE.sub("_", stem).strip("._-() ")
    stem = _truncate_utf8(stem, _MAX_STEM_BYTES) or "photo"
    allowed = _EXTENSIONS[image_format]
    extension = extension.lower() if extension.lower() in allowed else allowed[0]
    return f"{stem}.{extension}"


def _truncate_utf8(text: str, limit: int) -> str:
    encoded = text.encode("utf-8")[:limit]
    return encoded.decode("utf-8", errors="ignore")


def save_new_file(folder: Path, name: str, data: bytes) -> Path:
    """Write `data` to `folder/name`, or `name-1`, `name-2`, ... if taken; never overwrites.

    The bytes go to a hidden temporary file first and are linked into place in one step, so
    the library scanner never sees half a photo.
    """
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f".upload-{uuid.uuid4().hex}.part"
    with temporary.open("xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    try:
        for target in _candidate_paths(folder, name):
            if _claim(target, temporary, data):
                log.info("saved upload as %s", target)
                return target
    finally:
        temporary.unlink(missing_ok=True)
    raise FileExistsError(f"no free name for {name} in {folder}")


def _candidate_paths(folder: Path, name: str) -> list[Path]:
    stem, _, extension = name.rpartition(".")
    paths = [folder / name] + [folder / f"{stem}-{n}.{extension}" for n in range(1, 1000)]
    if any(path.parent != folder for path in paths):  # impossible after `safe_file_name`
        raise ValueError(f"unsafe upload name {name!r}")
    return paths


def _claim(target: Path, temporary: Path, data: bytes) -> bool:
    """Put the photo at `target` unless something is there; False when the name is taken."""
    try:
        os.link(temporary, target)  # atomic, and fails if the name exists
        return True
    except FileExistsError:
        return False
    except OSError:  # a filesystem without hard links: exclusive create, then write
        pass
    try:
        with target.open("xb") as handle:
            handle.write(data)
    except FileExistsError:
        return False
    return True
