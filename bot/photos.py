"""Get a library photo ready to send as a chat image, without ever touching the original.

WeChat takes JPEG, PNG and GIF images up to a size limit. Anything else (HEIC, WebP, BMP, ...)
or anything bigger is sent as a resized JPEG copy kept in a cache folder.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from config.settings import MAX_PIXELS
from index.errors import PhotoUnreadable
from index.library.imaging import thumbnail_jpeg
from index.library.names import readable_path

log = logging.getLogger(__name__)

# Magic bytes of the formats chat clients show inline.
_SENDABLE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a")
_MIN_SIDE = 320


@dataclass(frozen=True)
class OutgoingPhoto:
    path: Path  # the file to send: the original, or a converted copy in the cache
    name: str  # the file name the recipient sees (valid UTF-8: see index.library.names)
    converted: bool


class PhotoPreparer:
    """Decide per photo whether the original can be sent, else make (or reuse) a JPEG copy."""

    def __init__(
        self,
        cache_dir: Path,
        max_bytes: int,
        *,
        max_side: int = 2048,
        max_pixels: int = MAX_PIXELS,
    ) -> None:
        self.cache_dir = cache_dir
        self.max_bytes = max_bytes
        self.max_side = max_side
        self.max_pixels = max_pixels

    def prepare(self, path: Path) -> OutgoingPhoto:
        """The photo as it will be sent. Blocking; raises `PhotoUnreadable`."""
        size = _size(path)
        if size <= self.max_bytes and _has_sendable_format(path):
            return OutgoingPhoto(path, readable_path(path.name), converted=False)
        copy = self.cache_dir / f"{_cache_key(path, size, self.max_side, self.max_bytes)}.jpg"
        if not copy.is_file():
            _write_atomically(copy, self._small_jpeg(path))
            log.info("sending %s as a %d-byte JPEG copy", path.name, copy.stat().st_size)
        return OutgoingPhoto(copy, readable_path(f"{path.stem}.jpg"), converted=True)

    def _small_jpeg(self, path: Path) -> bytes:
        """A JPEG within `max_bytes`: shrink the long side until it fits."""
        side = self.max_side
        while True:
            data = thumbnail_jpeg(path, side, max_pixels=self.max_pixels)
            if len(data) <= self.max_bytes or side <= _MIN_SIDE:
                return data
            side = max(_MIN_SIDE, side * 3 // 4)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as error:
        raise PhotoUnreadable(str(path), "not_found", str(error)) from error


def _has_sendable_format(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
    except OSError as error:
        raise PhotoUnreadable(str(path), "io_error", str(error)) from error
    return head.startswith(_SENDABLE_MAGIC)


def _cache_key(path: Path, size: int, max_side: int, max_bytes: int) -> str:
    """Changes when the file (path, size, mtime) or the limits change."""
    try:
        mtime_ns = path.stat().st_mtime_ns
    except OSError as error:  # gone between the size check and now
        raise PhotoUnreadable(str(path), "not_found", str(error)) from error
    text = f"{path.resolve()}|{size}|{mtime_ns}|{max_side}|{max_bytes}"
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def _write_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=target.parent, suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
