"""Exceptions raised by the core. What each edge says for one (its HTTP status, the Chinese words
of the web page, the bot and the CLI) is its row in `index/error_words.py`."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum


class PeiTuError(Exception):
    """Base class of every error the core raises on purpose."""


class Reason(StrEnum):
    """Why a file was not read as a photo: `PhotoUnreadable.reason`, and the keys of a scan's
    skip counts (the web page and the CLI show them by these names)."""

    EMPTY = "empty"
    TRUNCATED = "truncated"
    CORRUPT = "corrupt"  # not an image, or one in a format outside the allow-list
    TOO_MANY_PIXELS = "too_many_pixels"
    PERMISSION_DENIED = "permission_denied"
    TOO_LARGE = "too_large"
    BROKEN_SYMLINK = "broken_symlink"
    SYMLINK_LOOP = "symlink_loop"
    NOT_A_FILE = "not_a_file"
    NOT_FOUND = "not_found"  # vanished between listing and reading
    OUTSIDE_LIBRARY = "outside_library"  # a symlink whose target is outside the library
    IO_ERROR = "io_error"  # any other OS error (a flaky disk or network share)
    UNREADABLE = "unreadable"  # a remote server refused the image without saying why

    @classmethod
    def parse(cls, text: str) -> Reason:
        """The reason named `text`; `UNREADABLE` for a name this version does not know."""
        try:
            return cls(text)
        except ValueError:
            return cls.UNREADABLE


class PhotoUnreadable(PeiTuError):
    """A file could not be read or decoded as an image, for a typed `reason`.

    A `str` reason must be one of `Reason`'s values (anything else is a bug: `ValueError`)."""

    def __init__(self, path: str, reason: Reason | str, detail: str = "") -> None:
        self.path = path
        self.reason = Reason(reason)
        self.detail = detail
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))


class ModelUnavailable(PeiTuError):
    """A model (local or behind an HTTP endpoint) could not be loaded or reached."""


class ModelCoolingDown(ModelUnavailable):
    """A model endpoint failed repeatedly and rests: no request is sent until `left_s` pass."""

    def __init__(self, message: str, left_s: float) -> None:
        self.left_s = left_s
        super().__init__(message)


class DescribeFailed(PeiTuError):
    """The describer gave up on one photo after its retries."""


class DescriberResting(DescribeFailed):
    """The describer's model failed repeatedly and rests: the photo was not sent to it (the
    next run describes it)."""


class PhotoChanged(DescribeFailed):
    """The file no longer holds the bytes it was scanned with (replaced while indexing)."""


class RerankFailed(PeiTuError):
    """The reranking LLM timed out, errored or answered something we cannot use."""


class IndexMismatch(PeiTuError):
    """The vector collection was built with another embedding model, dimension or schema."""


class IndexBusy(PeiTuError):
    """Another indexing job is already running."""

    def __init__(self, running_job_id: str | None = None) -> None:
        self.running_job_id = running_job_id
        super().__init__(f"an indexing job is already running ({running_job_id})")


class LibraryNotFound(PeiTuError):
    """The configured photo library folder does not exist or is not a folder."""


class InvalidQuery(PeiTuError):
    """The recommendation text is empty or otherwise unusable."""


class CatalogTooNew(PeiTuError):
    """The data folder's catalog was written by a newer PeiTu with a schema this one lacks."""


class DiskFull(PeiTuError):
    """The disk the data folder is on has no room for what must be written (or too little to
    start): indexing stops at once with this line; searching goes on."""


# How SQLite, the OS and Chroma's own bindings (which pass SQLite's and the OS's text on) say
# that the disk is full.
_SQLITE_FULL = 13
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NO_SPACE_WORDS = ("database or disk is full", "no space left on device", "disk quota exceeded")


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` (from SQLite, a file write, Chroma) means there is no room on the disk."""
    if isinstance(error, DiskFull):
        return True
    if isinstance(error, OSError) and error.errno in _NO_SPACE:
        return True
    if getattr(error, "sqlite_errorcode", None) == _SQLITE_FULL:
        return True
    text = str(error).lower()
    return any(words in text for words in _NO_SPACE_WORDS)


@contextmanager
def disk_full_raised(where: str) -> Iterator[None]:
    """Turn an error that means "no room on the disk" into `DiskFull` (others pass as they are)."""
    try:
        yield
    except DiskFull:
        raise
    except Exception as error:
        if not is_disk_full(error):
            raise
        raise DiskFull(f"no room on the disk for {where}: {error}") from error
