"""Exceptions raised by the core. Edges translate them (HTTP status in `server/`, reply text in `bot/`)."""

from __future__ import annotations

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
