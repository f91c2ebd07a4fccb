"""Plain records the facade (`PeiTu`) answers the edges with: one photo's details, whether the
index can answer, the job running now, an upload taken in. No heavy imports: an edge can name
them for a type without loading the pipeline."""

from __future__ import annotations

from dataclasses import dataclass

from index.library.catalog import StoredDescription
from index.models import PhotoFile


@dataclass(frozen=True)
class PhotoDetails:
    """What the index knows of one photo, read by point queries on its id."""

    photo: PhotoFile  # its first file by path; `rel_path` is relative to the library
    description: StoredDescription | None  # the description that counts (tiers), if any
    indexed: bool  # has a vector, i.e. can be recommended


@dataclass(frozen=True)
class IndexReadiness:
    """Whether the index answers now, without counting the library (cheap: a probe's answer)."""

    embedding_model: str
    photos: int  # findable (0 while the index was built with another model)
    indexing: bool
    problem: str | None = None


@dataclass(frozen=True)
class RunningJob:
    """An indexing job running now in some thread or process (it holds the index lock)."""

    job_id: str | None  # None: the holder has not written its id yet


@dataclass(frozen=True)
class AcceptedUpload:
    """A photo saved into the library by an upload, to be picked up by the next index run."""

    photo_id: str
    rel_path: str  # POSIX, relative to the library
    readmitted: bool  # it had been taken out of the index before, and is back in
    already_indexed: bool = False  # the same bytes are searchable already (another copy)
