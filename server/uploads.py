"""Uploaded photos: read within a size limit, checked by content, given a safe new name."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

from fastapi import HTTPException, Request, UploadFile

from index.errors import PhotoUnreadable
from index.library.imaging import open_image
from index.library.uploads import UPLOADS_FOLDER as UPLOADS_FOLDER  # the tests' and routes' name
from server.errors import UploadTooLarge

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
FILE_PART = "file"  # the one part of an upload form
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


async def read_upload(request: Request, upload: UploadFile, max_bytes: int) -> bytes:
    """The uploaded bytes; `UploadTooLarge` (413) when there are more than `max_bytes`, 400
    when the form has any part besides its one `file` (none is dropped unsaid)."""
    await _only_the_file(request)
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UploadTooLarge(max_bytes)
    return data


async def _only_the_file(request: Request) -> None:
    form = await request.form()  # parsed once already, to give the route its `file`
    names = [name for name, _ in form.multi_items()]
    if names == [FILE_PART]:
        return
    counted = ", ".join(f"{count} named {name!r}" for name, count in Counter(names).items())
    raise HTTPException(
        400,
        f"send one photo, as one part named {FILE_PART!r}; this form has {len(names)} "
        f"parts ({counted})",
    )


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
    sent = multipart_name(raw_name or "")
    name = unicodedata.normalize("NFC", sent.replace("\\", "/")).rsplit("/", 1)[-1]
    stem, dot, extension = name.rpartition(".")
    if not dot:
        stem, extension = name, ""
    stem = _UNSAFE.sub("_", stem).strip("._-() ")
    stem = _truncate_utf8(stem, _MAX_STEM_BYTES) or "photo"
    allowed = _EXTENSIONS[image_format]
    extension = extension.lower() if extension.lower() in allowed else allowed[0]
    return f"{stem}.{extension}"


def multipart_name(name: str) -> str:
    """A file name as the person's system wrote it. The form parser reads the name's bytes as
    UTF-8, or else as Latin-1: a Chinese Windows browser or tool that sends GBK bytes comes out
    as `ÖÐÎÄ`, which is turned back into `中文` here when those bytes are GBK (GB 18030) and
    give Chinese; any other name is kept as it came."""
    if name.isascii() or any(ord(char) > 0xFF for char in name):
        return name  # plain, or decoded as UTF-8 already
    try:
        decoded = name.encode("latin-1").decode("gb18030")
    except UnicodeDecodeError:
        return name
    return decoded if any("\u4e00" <= char <= "\u9fff" for char in decoded) else name


def _truncate_utf8(text: str, limit: int) -> str:
    encoded = text.encode("utf-8")[:limit]
    return encoded.decode("utf-8", errors="ignore")
