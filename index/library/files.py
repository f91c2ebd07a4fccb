"""Reading and deleting library files only where they really are inside the library.

A library can hold symlinks, and a file can be swapped for one after it was indexed (a link to
`/etc/passwd`, to `/proc/self/environ`, to a folder elsewhere). So a file is opened only after
its real path is resolved and found inside the library's real path, and checked again on the
open descriptor itself: a regular file (never a FIFO or a device), the one that was resolved.
A file is deleted only when it is a regular file (not a link) whose folder's real path lies
inside the library, and it is unlinked relative to that folder's open descriptor.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from index.errors import PhotoUnreadable

if TYPE_CHECKING:
    from index.library.catalog import Catalog

log = logging.getLogger(__name__)
_T = TypeVar("_T")

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
OUTSIDE = "outside_library"


def real_path_inside(root: Path, rel_path: str, follow_external_links: bool = False) -> Path:
    """The real path of `root/rel_path`; raises `PhotoUnreadable` ("outside_library",
    "not_found") unless it exists and lies inside the real path of `root`.

    `follow_external_links` (the user's PEITU_INDEXING__FOLLOW_EXTERNAL_LINKS): the library's
    own links may lead elsewhere, as the scan followed them; `rel_path` itself must still stay
    below `root` (no `..`)."""
    real_root = root.expanduser().resolve()
    label = str(root / rel_path)
    if ".." in Path(rel_path).parts or Path(rel_path).is_absolute():
        raise PhotoUnreadable(label, OUTSIDE, "the path leads out of the library")
    try:
        real = (real_root / rel_path).resolve(strict=True)
    except (OSError, RuntimeError) as error:  # missing, a dangling link, a loop
        raise PhotoUnreadable(label, "not_found", type(error).__name__) from error
    if not follow_external_links and not real.is_relative_to(real_root):
        raise PhotoUnreadable(label, OUTSIDE, "the file's real path is outside the library")
    return real


def open_inside(root: Path, rel_path: str, follow_external_links: bool = False) -> BinaryIO:
    """Open `root/rel_path` for reading, only if it really is a regular file inside `root`
    (or, with `follow_external_links`, reached through the library's own links).

    Raises `PhotoUnreadable` ("outside_library", "not_found", "not_a_file").
    """
    real = real_path_inside(root, rel_path, follow_external_links)
    try:
        fd = os.open(real, _OPEN_FLAGS)  # O_NOFOLLOW: not swapped for a link since resolving
    except OSError as error:
        raise PhotoUnreadable(str(real), "not_found", type(error).__name__) from error
    try:
        _check_descriptor(fd, real, None if follow_external_links else root)
    except BaseException:
        os.close(fd)
        raise
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_inside(root: Path, rel_path: str, max_bytes: int) -> bytes:
    """The bytes of `root/rel_path` (see `open_inside`); "too_large" past `max_bytes`."""
    with open_inside(root, rel_path) as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise PhotoUnreadable(str(root / rel_path), "too_large", f"more than {max_bytes} bytes")
    return data


def _check_descriptor(fd: int, real: Path, root: Path | None) -> None:
    opened = os.fstat(fd)
    if not stat.S_ISREG(opened.st_mode):
        raise PhotoUnreadable(str(real), "not_a_file", "not a regular file")
    try:
        now = os.stat(real, follow_symlinks=False)
    except OSError as error:
        raise PhotoUnreadable(str(real), "not_found", type(error).__name__) from error
    if (now.st_dev, now.st_ino) != (opened.st_dev, opened.st_ino):  # a folder swapped meanwhile
        raise PhotoUnreadable(str(real), OUTSIDE, "the file changed while it was opened")
    if root is None:
        return
    proc_link = Path(f"/proc/self/fd/{fd}")  # Linux: where the kernel says the file is
    real_root = root.expanduser().resolve()
    if proc_link.exists() and not Path(os.readlink(proc_link)).is_relative_to(real_root):
        raise PhotoUnreadable(str(real), OUTSIDE, "the opened file is outside the library")


def delete_inside(root: Path, rel_path: str) -> Path | None:
    """Delete `root/rel_path` if it is a regular file (not a link) whose real folder lies
    inside `root`; returns the real path deleted, or None when it was missing or refused."""
    real_root = root.expanduser().resolve()
    path = root / rel_path
    try:
        folder = path.parent.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not folder.is_relative_to(real_root):
        return None
    try:
        dir_fd = os.open(folder, _DIR_FLAGS)
    except OSError:
        return None
    try:
        if not _same_file(dir_fd, folder):
            return None
        entry = os.stat(path.name, dir_fd=dir_fd, follow_symlinks=False)
        if not stat.S_ISREG(entry.st_mode):
            return None
        os.unlink(path.name, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    finally:
        os.close(dir_fd)
    return folder / path.name


def _same_file(fd: int, path: Path) -> bool:
    opened = os.fstat(fd)
    now = os.stat(path, follow_symlinks=False)
    return (now.st_dev, now.st_ino) == (opened.st_dev, opened.st_ino)


class LibraryFiles:
    """The library's photos by id: each one's file, found through the catalog and checked to
    be a regular file really inside the library at the moment it is asked for."""

    def __init__(
        self, catalog: Catalog, library: Path | None, follow_external_links: bool = False
    ) -> None:
        self._catalog = catalog
        self._library = library
        self._follow_external_links = follow_external_links

    def path(self, photo_id: str) -> Path | None:
        """Real path of a regular file holding the photo inside the library, or None when it
        is not in the index, gone, or (a link swapped in, a linked folder) really elsewhere."""
        real = self._inside(photo_id, real_path_inside)
        return real if real is not None and real.is_file() else None

    def open(self, photo_id: str) -> BinaryIO | None:
        """The photo's file opened for reading, checked at the moment of opening (see
        `open_inside`); None otherwise."""
        return self._inside(photo_id, open_inside)

    def _inside(self, photo_id: str, use: Callable[[Path, str, bool], _T]) -> _T | None:
        """`use(library, rel_path, follow_external_links)` for the photo's file; None when the
        photo or the library is unknown, or the file is refused (`PhotoUnreadable`)."""
        photo = self._catalog.photo(photo_id)
        if photo is None or self._library is None:
            return None
        try:
            return use(self._library, photo.rel_path, self._follow_external_links)
        except PhotoUnreadable as error:
            _log_refused(error)
            return None


def _log_refused(error: PhotoUnreadable) -> None:
    if error.reason == OUTSIDE:
        log.warning("refused to read %s: %s", error.path, error.detail)
