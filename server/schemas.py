"""Request and response bodies of the HTTP API (they make the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, field_validator
from pydantic.config import JsonDict

from index.library.descriptions import Tier, describer_choices
from index.models import NoteKind, RerankState
from server.jobs import JobKind, JobState, JobView, UploadIndexing


class ErrorOut(BaseModel):
    detail: str = Field(description="what went wrong, in English, for a developer")
    message: str = Field(
        default="", description="the same in Chinese, short and actionable, for a person"
    )
    error: str | None = Field(
        default=None,
        description="the core error's name (index/errors.py, e.g. IndexBusy); absent otherwise",
    )
    reason: str | None = Field(
        default=None, description="PhotoUnreadable's stable reason (e.g. too_large); else absent"
    )


class BusyOut(ErrorOut):
    job_id: str | None = Field(description="id of the indexing job that is running")


# White space as JSON Schema's regexes (ECMA `\s`) and as Python's `str.split` know it: a text
# with nothing else is blank for both, so the schema and the server agree on every string.
_SPACE = frozenset(
    "\t\n\v\f\r \x1c\x1d\x1e\x1f\x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000\ufeff"
    + "".join(chr(c) for c in range(0x2000, 0x200B))
)
NOT_BLANK_PATTERN = "[^" + "".join(sorted(_SPACE)) + "]"  # the characters themselves: no `\s`


def is_blank(text: str) -> bool:
    """True when the text holds only white space (in either sense)."""
    return all(char in _SPACE for char in text)


class RecommendIn(BaseModel):
    text: StrictStr = Field(
        max_length=10_000,
        description="the social-media text to find photos for; blank text is a 400",
        # documented here, refused by the route with a readable 400 (see `is_blank`)
        json_schema_extra={"pattern": NOT_BLANK_PATTERN},
    )
    top_k: int | None = Field(default=None, ge=1, le=100, description="how many photos")
    rerank: StrictBool = Field(default=True, description="let the LLM rerank the candidates")
    time_place: Literal["prefer", "strict", "off"] | None = Field(
        default=None,
        description="time/place words: prefer photos of them (default PEITU_TIME_PLACE), "
        "only them (strict), or ignore them (off)",
    )
    closest: StrictBool = Field(
        default=False, description="return the closest photos even when none fits the text"
    )

    @field_validator("top_k", mode="before")
    @classmethod
    def _whole_number(cls, value: object) -> object:
        # as JSON Schema's "integer": 18 and 18.0, never "18", true or 18.5
        if isinstance(value, bool | str) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError("must be a whole number")
        return int(value) if isinstance(value, float) else value


class RecommendationOut(BaseModel):
    rank: int
    photo_id: str
    path: str = Field(description="path relative to the library")
    similarity: float = Field(description="raw cosine of the first stage")
    score: float = Field(description="match / 100")
    reason: str
    description: str
    match: float = Field(
        default=0.0,
        description="匹配度 0-100, what the order follows (the calibrated match, or the LLM's "
        "score × 100); 50 and up fits",
    )
    fits: bool = Field(default=True, description="false: shown only as one of the closest")
    likeness: float | None = Field(
        default=None, description="a look-alike's 相似度 0-100 (similar photos); null otherwise"
    )


class NoteOut(BaseModel):
    kind: NoteKind = Field(description="what the note says (see index.models.NoteKind)")
    text: str = Field(description="the Chinese line a person reads")


class RerankOut(BaseModel):
    state: RerankState = Field(
        description="off: not asked (switched off, no LLM, nothing to rerank, similar photos); "
        "used: the LLM ordered the photos; failed: 匹配度 order instead"
    )
    reason: str | None = Field(description="why it failed (English detail); null unless failed")


class RecommendOut(BaseModel):
    """Exactly what `peitu recommend --json` prints."""

    query: str
    reranked: bool = Field(description='rerank.state == "used"')
    message: str | None = Field(description='the notes\' texts joined by "；"; null without notes')
    results: list[RecommendationOut]
    timings_ms: dict[str, float]
    nothing_fits: bool = Field(
        default=False, description="no photo fits the text (results empty unless closest)"
    )
    time_place: Literal["prefer", "strict", "off"] | None = Field(
        default=None, description="how time/place words were used; null: the text had none"
    )
    notes: list[NoteOut] = Field(default_factory=list, description="what `message` joins, typed")
    rerank: RerankOut


def _name_the_describers(schema: JsonDict) -> None:
    """The OpenAPI schema lists the describers known when it is made (`describer_choices`)."""
    options = schema.get("anyOf")
    for option in options if isinstance(options, list) else []:
        if isinstance(option, dict) and option.get("type") == "string":
            option["enum"] = list(describer_choices())


class JobIn(BaseModel):
    model_config = ConfigDict(strict=True)

    mode: Literal["incremental", "rebuild"] = "incremental"
    redescribe: bool = Field(
        default=False,
        description="describe every photo again and use that description, even over a better "
        "tier (imported > vision > offline); like `peitu index --redescribe`",
    )
    describer: str | None = Field(
        default=None,
        description="describer for this job (default: the server's)",
        json_schema_extra=_name_the_describers,
    )

    @field_validator("describer")
    @classmethod
    def _known_describer(cls, value: str | None) -> str | None:
        if value is not None and value not in describer_choices():
            raise ValueError(f"must be one of {', '.join(describer_choices())}")
        return value


class JobCreatedOut(BaseModel):
    job_id: str
    state: JobState


class ProgressOut(BaseModel):
    phase: str | None = Field(description="scan, describe or embed")
    done: int
    total: int


class CountsOut(BaseModel):
    """The counts of `peitu index --json`."""

    scanned: int
    new: int
    unchanged: int
    moved: int
    removed: int
    described: int
    embedded: int
    failed: int
    visual_embedded: int = Field(default=0, description="photos whose pixels got a vector")
    visual_failed: int = 0
    dates_ignored: int = Field(default=0, description="photos whose EXIF time was impossible")
    skipped: dict[str, int]


class JobOut(BaseModel):
    job_id: str
    mode: Literal["incremental", "rebuild"]
    trigger: str = Field(description="api, upload, schedule, follow-up, or external (the CLI)")
    state: JobState
    progress: ProgressOut
    counts: CountsOut | None = Field(description="set when the job has finished")
    errors: list[str] = Field(description="photos that failed, one line each")
    error: str | None = Field(description="why the job failed, when it did")
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    kind: JobKind = Field(
        default="incremental",
        description="incremental, rebuild, upload, scheduled, cli (another process) or follow-up",
    )
    elapsed_s: float | None = Field(default=None, description="seconds since it started")
    rate_per_s: float | None = Field(default=None, description="photos per second, this phase")
    eta_s: float | None = Field(
        default=None, description="seconds until the job is done (this phase and the ones after)"
    )
    error_message: str | None = Field(default=None, description="`error` in Chinese")

    @classmethod
    def of(cls, job: JobView) -> JobOut:
        counts = CountsOut.model_validate(job.counts) if job.counts is not None else None
        return cls(
            job_id=job.job_id,
            mode=job.mode,
            trigger=job.trigger,
            state=job.state,
            progress=ProgressOut(phase=job.phase, done=job.done, total=job.total),
            counts=counts,
            errors=list(job.errors),
            error=job.error,
            cancel_requested=job.cancel_requested,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            kind=job.kind,
            elapsed_s=job.elapsed_s,
            rate_per_s=job.rate_per_s,
            eta_s=job.eta_s,
            error_message=job.error_message,
        )


class JobListOut(BaseModel):
    jobs: list[JobOut] = Field(
        description="the last 20 jobs, newest first: this server's and other processes' (CLI)"
    )


class StatusOut(BaseModel):
    photos: int = Field(description="photos with a vector, i.e. findable")
    files: int = Field(description="distinct photos seen in the library")
    last_index_at: datetime | None
    indexing: bool
    problem: str | None
    running_job_id: str | None
    next_scheduled_index_at: datetime | None
    tiers: dict[str, int] = Field(
        default_factory=dict,
        description="photos by the tier of the description used: imported, vision, offline, "
        "none (not described yet)",
    )


class PhotoOut(BaseModel):
    photo_id: str
    path: str = Field(description="path relative to the library")
    size: int = Field(description="bytes")
    width: int
    height: int
    taken_at: datetime | None
    gps_lat: float | None
    gps_lon: float | None
    description: str | None
    describer: str | None
    describer_tier: Tier | None = None
    indexed: bool = Field(description="has a vector, i.e. can be recommended")


class UploadOut(BaseModel):
    photo_id: str
    path: str = Field(description="where it was saved, relative to the library")
    width: int
    height: int
    status: UploadIndexing = Field(
        description="started: a job indexes it now; queued: a job runs after the current one; "
        "busy: another process is indexing; a job starts by itself when it ends"
    )
    job_id: str | None = Field(description="the job that was started, or the one running")
    indexed: bool = Field(
        default=False,
        description="the same photo (the same bytes) is searchable already; a new one is "
        "indexed by the job (status, job_id)",
    )
    message: str


class DeletedOut(BaseModel):
    photo_id: str
    removed_from_index: bool
    files_deleted: list[str] = Field(description="paths relative to the library")


class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyOut(BaseModel):
    ready: bool
    embedding_model: str
    photos: int
    problem: str | None = Field(description="e.g. the index needs `peitu index --rebuild`")
