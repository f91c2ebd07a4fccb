"""Walk the photo library and list every readable photo, counting what was skipped and why.

What is ignored silently (not counted): names starting with "." and the junk folders NAS boxes
and archivers leave behind (`JUNK_DIRS`), files without an image extension, and a directory
reached a second time through a symlink (its photos are listed under their real path).
What is counted in `ScanResult.skipped`: every image-extension file that cannot be read (keys are
`index.library.imaging.Reason` values), every broken or looping symlink whatever its name, and every
directory that cannot be listed (permission_denied / io_error).

Symlinks are followed while their real target lies inside the library. A link (to a file with an
image extension, or to a folder) that leads outside is not followed and is counted as
"outside_library", unless `follow_external_links` says otherwise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from index.errors import LibraryNotFound, PhotoChanged, PhotoUnreadable
from index.library.dedup import image_hash
from index.library.imaging import (
    PhotoReader,
    Reason,
    check_image_file,
    has_image_extension,
    read_photo,
)
from index.models import PhotoFile

logger = logging.getLogger(__name__)

JUNK_DIRS = frozenset(
    {
        "@eaDir",  # Synology thumbnails
        "#recycle",  # Synology recycle bin
        "#snapshot",
        "@Recycle",  # QNAP
        ".thumbnails",
        "__MACOSX",  # macOS zip resource forks
        "$RECYCLE.BIN",
        "System Volume Information",
    }
)

KnownLookup = Callable[[str, int, float], PhotoFile | None]
ScanProgress = Callable[[int, int], None]
_DirKey = tuple[int, int]  # (st_dev, st_ino) of a real directory


@dataclass
class ScanResult:
    """Photos found (sorted by rel_path) and what was skipped, by reason and by path; the
    perceptual hash (`index.library.dedup`) of each photo this scan read (not of those `known` gave)."""

    photos: list[PhotoFile] = field(default_factory=list)
    hashes: dict[str, str] = field(default_factory=dict)  # photo_id -> perceptual hash
    skipped: dict[str, int] = field(default_factory=dict)
    skipped_paths: list[tuple[str, str]] = field(default_factory=list)  # (rel_path, reason)
    dates_ignored: int = 0  # photos whose EXIF time was impossible (the future, year 9999)

    def record_skip(self, rel_path: str, reason: str, detail: str = "") -> None:
        """Count one skipped file or folder and log it with its path relative to the library."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        self.skipped_paths.append((rel_path, reason))
        logger.warning("skipped %s: %s%s", rel_path, reason, f" ({detail})" if detail else "")


@dataclass(frozen=True)
class _Limits:
    max_file_bytes: int
    max_pixels: int
    read: PhotoReader


@dataclass(frozen=True)
class _PendingDir:
    path: Path
    rel_path: str
    key: _DirKey
    ancestors: frozenset[_DirKey]  # the real directories above it, itself included


def scan_library(
    root: Path,
    *,
    max_file_bytes: int,
    max_pixels: int,
    known: KnownLookup | None = None,
    progress: ScanProgress | None = None,
    follow_external_links: bool = False,
    read: PhotoReader = read_photo,
) -> ScanResult:
    """List the readable photos under `root`, hashing each file's bytes for its `photo_id`.

    `known(rel_path, size, mtime)` is the caller's cache: it returns the `PhotoFile` stored for a
    file at that relative path with that size and mtime, or None. A file it knows is taken as
    unchanged and is not opened at all; its record is reused with `path` set to where it is now.
    `progress(done, total)` is called once before the first file and after each file.
    `follow_external_links` lets symlinks lead outside `root` (they are skipped otherwise).
    `read` decodes each file that is opened, once: its size, time, place and perceptual hash all
    come from that one decode.
    Raises `LibraryNotFound` when `root` is missing, not a folder, or cannot be listed: an
    unreadable root must not look like an empty library, which would drop every photo.
    """
    root = _checked_root(root)
    result = ScanResult()
    candidates = _LibraryWalk(root, result, follow_external_links).files()
    limits = _Limits(max_file_bytes, max_pixels, read)
    _report(progress, 0, len(candidates))
    for done, (rel_path, path) in enumerate(candidates, start=1):
        photo = _read_photo(rel_path, path, limits, known, result)
        if photo is not None:
            result.photos.append(photo)
        _report(progress, done, len(candidates))
    result.photos.sort(key=lambda photo: photo.rel_path)
    result.skipped_paths.sort()
    logger.info("scanned %s: %d photos, skipped %s", root, len(result.photos), result.skipped)
    return result


def _checked_root(root: Path) -> Path:
    root = root.expanduser().absolute()
    if not root.exists():
        raise LibraryNotFound(f"photo library folder does not exist: {root}")
    if not root.is_dir():
        raise LibraryNotFound(f"photo library is not a folder: {root}")
    try:
        with os.scandir(root):
            pass
    except OSError as error:
        raise LibraryNotFound(f"photo library folder cannot be read: {root} ({error})") from None
    return root


def _report(progress: ScanProgress | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)


def _read_photo(
    rel_path: str, path: Path, limits: _Limits, known: KnownLookup | None, result: ScanResult
) -> PhotoFile | None:
    try:
        return _photo_file(rel_path, path, limits, known, result)
    except PhotoUnreadable as error:
        result.record_skip(rel_path, error.reason, error.detail)
        return None


def _photo_file(
    rel_path: str,
    path: Path,
    limits: _Limits,
    known: KnownLookup | None,
    result: ScanResult,
) -> PhotoFile:
    info = check_image_file(path, max_bytes=limits.max_file_bytes)
    cached = known(rel_path, info.st_size, info.st_mtime) if known is not None else None
    if cached is not None:
        return dataclasses.replace(cached, path=path, rel_path=rel_path)
    # One read and one decode: the id is the hash of the very bytes whose size, time, place and
    # perceptual hash are recorded.
    data = read_file(path)
    decoded = limits.read(data, max_pixels=limits.max_pixels, max_bytes=limits.max_file_bytes)
    photo_id = hashlib.sha256(data).hexdigest()
    digest = image_hash(decoded.image)
    if digest is not None:
        result.hashes[photo_id] = digest
    image = decoded.info
    if image.date_ignored:
        result.dates_ignored += 1
        logger.warning("%s: its EXIF time is impossible (the future); taken as unknown", rel_path)
    return PhotoFile(
        photo_id=photo_id,
        path=path,
        rel_path=rel_path,
        size=info.st_size,
        mtime=info.st_mtime,
        width=image.width,
        height=image.height,
        taken_at=image.taken_at,
        gps_lat=image.gps_lat,
        gps_lon=image.gps_lon,
    )


def read_file(path: Path) -> bytes:
    """A file's bytes. Raises `PhotoUnreadable` on an OS error."""
    try:
        return path.read_bytes()
    except OSError as error:
        reason = Reason.PERMISSION_DENIED if isinstance(error, PermissionError) else Reason.IO_ERROR
        raise PhotoUnreadable(str(path), reason.value, error.strerror or str(error)) from error


def read_unchanged(photo: PhotoFile) -> bytes:
    """The photo's file content, when it still is the content the scan hashed: a sync tool may
    have replaced the file since (atomic rename), and a description must be of `photo_id`.
    Raises `PhotoChanged` (the next scan picks the new version up) or `PhotoUnreadable`."""
    data = read_file(photo.path)
    if hashlib.sha256(data).hexdigest() != photo.photo_id:
        raise PhotoChanged("the file changed after it was scanned; the next run indexes it again")
    return data


def _is_ignored(name: str) -> bool:
    return name.startswith(".") or name in JUNK_DIRS


class _LibraryWalk:
    """Depth-first walk in name order that lists image files as (rel_path, absolute path).

    Real directories are all walked before any directory reached through a symlink, so a photo
    is listed under its real path and an alias to a folder already walked adds nothing.
    """

    def __init__(self, root: Path, result: ScanResult, follow_external_links: bool) -> None:
        self._result = result
        self._real_root = os.path.realpath(root)
        self._follow_external_links = follow_external_links
        self._visited: set[_DirKey] = set()
        root_key = _dir_key(root.stat())
        self._real: list[_PendingDir] = [_PendingDir(root, "", root_key, frozenset({root_key}))]
        self._linked: list[_PendingDir] = []
        self._files: list[tuple[str, Path]] = []

    def files(self) -> list[tuple[str, Path]]:
        """Walk the whole tree; skips are recorded in the result as they are met."""
        while self._real or self._linked:
            pending = self._real.pop() if self._real else self._linked.pop()
            if pending.key in self._visited:
                logger.debug("%s: folder already scanned through another path", pending.rel_path)
                continue
            self._visited.add(pending.key)
            self._walk_dir(pending)
        return sorted(self._files)

    def _walk_dir(self, pending: _PendingDir) -> None:
        real_dirs: list[_PendingDir] = []
        linked_dirs: list[_PendingDir] = []
        for entry in self._list(pending):
            child = self._visit(entry, pending)
            if child is not None:
                (linked_dirs if entry.is_symlink() else real_dirs).append(child)
        # Reversed so that popping the stacks walks folders in name order.
        self._real.extend(reversed(real_dirs))
        self._linked.extend(reversed(linked_dirs))

    def _list(self, pending: _PendingDir) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(pending.path) as entries:
                return sorted(entries, key=lambda entry: entry.name)
        except OSError as error:
            rel_path = pending.rel_path or "."
            reason = Reason.PERMISSION_DENIED if isinstance(error, PermissionError) else None
            self._result.record_skip(rel_path, (reason or Reason.IO_ERROR).value, str(error))
            return []

    def _visit(self, entry: os.DirEntry[str], parent: _PendingDir) -> _PendingDir | None:
        """List an image file, or return a sub-folder to walk; record what is broken."""
        if _is_ignored(entry.name):
            return None
        rel_path = f"{parent.rel_path}/{entry.name}" if parent.rel_path else entry.name
        try:
            info = entry.stat()  # follows symlinks
        except OSError:
            self._skip_unreachable(entry, rel_path)
            return None
        is_dir = stat.S_ISDIR(info.st_mode)
        if not is_dir and not has_image_extension(entry.name):
            return None
        if entry.is_symlink() and not self._may_follow(entry):
            detail = "a link to outside the library (PEITU_INDEXING__FOLLOW_EXTERNAL_LINKS)"
            self._result.record_skip(rel_path, Reason.OUTSIDE_LIBRARY.value, detail)
            return None
        if is_dir:
            return self._subdir(entry, rel_path, info, parent)
        self._files.append((rel_path, Path(entry.path)))
        return None

    def _may_follow(self, link: os.DirEntry[str]) -> bool:
        if self._follow_external_links:
            return True
        target = os.path.realpath(link.path)
        return os.path.commonpath([target, self._real_root]) == self._real_root

    def _subdir(
        self, entry: os.DirEntry[str], rel_path: str, info: os.stat_result, parent: _PendingDir
    ) -> _PendingDir | None:
        key = _dir_key(info)
        if key in parent.ancestors:
            self._result.record_skip(rel_path, Reason.SYMLINK_LOOP.value, "points to a parent")
            return None
        return _PendingDir(Path(entry.path), rel_path, key, parent.ancestors | {key})

    def _skip_unreachable(self, entry: os.DirEntry[str], rel_path: str) -> None:
        """Record an entry whose stat fails: the reason comes from `check_image_file`."""
        try:
            check_image_file(entry.path)
        except PhotoUnreadable as error:
            if error.reason != Reason.NOT_FOUND:  # a file deleted mid-walk is not news
                self._result.record_skip(rel_path, error.reason, error.detail)


def _dir_key(info: os.stat_result) -> _DirKey:
    return info.st_dev, info.st_ino
