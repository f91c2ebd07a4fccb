"""Exceptions raised by the core. Edges translate them (HTTP status in `server/`, reply text in `bot/`)."""

from __future__ import annotations


class PeiTuError(Exception):
    """Base class of every error the core raises on purpose."""


class PhotoUnreadable(PeiTuError):
    """A file could not be read or decoded as an image. `reason` is a short stable key."""

    def __init__(self, path: str, reason: str, detail: str = "") -> None:
        self.path = path
        self.reason = reason
        self.detail = detail
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))


class ModelUnavailable(PeiTuError):
    """A model (local or behind an HTTP endpoint) could not be loaded or reached."""


class DescribeFailed(PeiTuError):
    """The describer gave up on one photo after its retries."""


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
