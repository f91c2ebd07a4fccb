"""What the admin server needs from the core, as `Protocol`s named by intent (like `bot/ports.py`).

Routes and the job manager reach the core only through these: never its catalog, store, lock
or embedder. `index.service.PeiTu` is the implementation; a test can put a counting or failing one
in its place. Every method blocks: call it in a thread.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, BinaryIO, Protocol

from index.models import IndexReport, ProgressCallback, RecommendResult
from index.ports import Describer
from index.records import AcceptedUpload, IndexReadiness, PhotoDetails, RunningJob

if TYPE_CHECKING:  # only for types: importing them at run time loads the whole pipeline
    from index.indexing.indexer import IndexMode
    from index.library.pairing import BotAccess
    from index.ranking.recommend import TimePlace
    from index.service import IndexStatus


class IndexRunner(Protocol):
    """What the job manager needs: run an indexing job, see whether one runs anywhere."""

    def index(
        self,
        mode: IndexMode = "incremental",
        *,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        job_id: str | None = None,
        redescribe: bool = False,
        describer: Describer | None = None,
    ) -> IndexReport:
        """Run one indexing job under the index lock; raises `IndexBusy` if one runs."""
        ...

    def running_job(self) -> RunningJob | None:
        """The job holding the index lock now (this process's or another's), or None."""
        ...


class PhotoService(IndexRunner, Protocol):
    """The core as the HTTP API uses it: find photos, show one, take one in or out, report."""

    def recommend(
        self,
        text: str,
        top_k: int | None = None,
        *,
        rerank: bool = True,
        time_place: TimePlace | None = None,
        closest: bool = False,
    ) -> RecommendResult:
        """Photos for `text` (`InvalidQuery`, `IndexBusy`, `IndexMismatch`, ...)."""
        ...

    def similar_to_image(self, data: bytes, top_k: int | None = None) -> RecommendResult:
        """Photos that look like the image; raises `PhotoUnreadable`, `IndexBusy`, ..."""
        ...

    def similar_to_photo(self, photo_id: str, top_k: int | None = None) -> RecommendResult | None:
        """Photos that look like one of the library's; None when it is not in the library."""
        ...

    def photo_details(self, photo_id: str) -> PhotoDetails | None:
        """One photo's record, description and whether it is findable, by point queries on its
        id; None when it is not in the index."""
        ...

    def open_photo(self, photo_id: str) -> BinaryIO | None:
        """The photo's file, opened only if it really is a regular file inside the library;
        None when it is not there (any more)."""
        ...

    def accept_upload(self, data: bytes, file_name: str) -> AcceptedUpload:
        """Save a checked upload into the library's `uploads/` folder under a free name and
        let the photo back into the index if it had been deleted; `LibraryNotFound`."""
        ...

    def remove_photo(self, photo_id: str, *, delete_file: bool = False) -> list[str] | None:
        """Take a photo out of the index for good (and its files off the disk): the deleted
        files relative to the library, or None when it was not in the index."""
        ...

    def status(self) -> IndexStatus:
        """Photos findable and seen, last run, tiers, whether a job runs (counts the library)."""
        ...

    def readiness(self) -> IndexReadiness:
        """Whether the index answers now (`ModelUnavailable` when the store does not), without
        counting the library: for `/readyz` and `/metrics`."""
        ...

    @property
    def bot_access(self) -> BotAccess:
        """The WeChat bot's pairing code and the people paired (the data folder's)."""
        ...

    def clean_up_leftovers(self) -> None:
        """Clean up after killed processes (unless an indexing job runs); blocking."""
        ...

    def warm_up(self) -> None:
        """Load the models now so the first request does not wait (`ModelUnavailable`, OSError)."""
        ...
