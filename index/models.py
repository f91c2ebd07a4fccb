"""Plain data passed between the core's parts and out to the edges."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

# Progress callbacks get (phase, done, total); phases are "scan", "describe", "embed".
ProgressCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class PhotoFile:
    """One readable image file found in the library."""

    photo_id: str  # sha256 of the file's bytes: the photo's identity
    # absolute when the scan found the file; read back from the catalog it is `rel_path`
    # (relative): resolve it against the library root (`PeiTu.photo_path`)
    path: Path
    rel_path: str  # path relative to the library root, POSIX separators
    size: int
    mtime: float
    width: int
    height: int
    taken_at: datetime | None = None
    gps_lat: float | None = None
    gps_lon: float | None = None


@dataclass(frozen=True)
class QueryFilters:
    """Restrictions drawn from the text ("去年夏天", "在大理"): applied to photo metadata."""

    taken_from: datetime | None = None  # inclusive
    taken_to: datetime | None = None  # exclusive
    place: str | None = None  # a Chinese place name: province, city or district


@dataclass(frozen=True)
class ParsedQuery:
    """What the text asks for: words for the semantic search, plus time/place filters."""

    semantic_text: str
    filters: QueryFilters | None = None
    notes: tuple[str, ...] = ()  # human-readable, e.g. "时间：2026-11-22"
    label: str = ""  # the time/place as the text said it, e.g. "去年夏天 在大理"


@dataclass(frozen=True)
class Candidate:
    """A photo found by the vector search, before reranking."""

    photo_id: str
    path: str
    similarity: float
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Judgement:
    """The reranker's verdict on one candidate."""

    photo_id: str
    relevance: float  # content relevance, 0..10
    emotion: float  # emotional consistency, 0..10
    social: float  # social appropriateness, 0..10
    reason: str

    @property
    def score(self) -> float:
        return round((self.relevance * 0.5 + self.emotion * 0.3 + self.social * 0.2) / 10.0, 4)


@dataclass(frozen=True)
class Recommendation:
    rank: int
    photo_id: str
    path: str
    similarity: float  # raw cosine of the first stage (of the image vectors for look-alikes)
    score: float  # match / 100: what the order follows
    reason: str
    description: str
    # 匹配度 0–100, what the order follows: the calibrated match (index.search.calibration), or
    # the LLM's score × 100 when it judged the photo; 50 and up fits the text
    match: float = 0.0
    fits: bool = True  # False: shown only because the closest photos were asked for
    # look-alikes (similar-photo answers): 相似度 0–100 of the pictures; None for a text's photos
    likeness: float | None = None


class NoteKind(StrEnum):
    """What a note of a `RecommendResult` says; its `text` is the Chinese line a person reads."""

    UNDERSTOOD = "understood"  # the text's time/place as read: "时间：去年夏天（…）", "地点：大理"
    RELAXED = "relaxed"  # strict time/place found nothing: a condition was dropped
    TIME_PLACE = "time_place"  # how the time/place ordered the photos ("优先显示 … 的照片")
    CLOSEST = "closest"  # none fits the text; the closest photos follow (asked for)
    NOTHING_FITS = "nothing_fits"  # none fits the text; names the closest
    NO_MATCH = "no_match"  # nothing over the similarity threshold; names the closest
    EMPTY_INDEX = "empty_index"  # nothing indexed yet
    RERANK_FAILED = "rerank_failed"  # the LLM failed or rests; the photos are in 匹配度 order
    RERANK_OFF = "rerank_off"  # no LLM configured (no API key): 匹配度 order, how to add one
    NO_DESCRIPTION = "no_description"  # similar by description: the photo has none yet
    NO_VISUAL_INDEX = "no_visual_index"  # similar photos: the visual index is empty
    NO_SIMILAR = "no_similar"  # similar photos: none found


@dataclass(frozen=True)
class Note:
    """One thing an answer says besides its photos, in the order it is said."""

    kind: NoteKind
    text: str


class RerankState(StrEnum):
    """Whether the LLM ordered the photos: not asked (switched off, not configured, nothing to
    rerank, similar photos), it did, or it was asked and failed (vector order instead)."""

    OFF = "off"
    USED = "used"
    FAILED = "failed"


@dataclass(frozen=True)
class Rerank:
    state: RerankState = RerankState.OFF
    reason: str | None = None  # why it failed (the error's English detail); FAILED only

    def __post_init__(self) -> None:
        if (self.state is RerankState.FAILED) != (self.reason is not None):
            raise ValueError("a rerank state has a reason exactly when it failed")

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state.value, "reason": self.reason}


RERANK_OFF = Rerank()
RERANK_USED = Rerank(RerankState.USED)
NOTE_SEPARATOR = "；"


@dataclass(frozen=True)
class RecommendResult:
    query: str
    results: list[Recommendation]
    timings_ms: dict[str, float]
    notes: tuple[Note, ...] = ()
    rerank: Rerank = RERANK_OFF
    nothing_fits: bool = False  # no photo fits the text (results empty unless closest asked)
    time_place: str | None = None  # how time/place words were used: prefer, strict, off

    @property
    def reranked(self) -> bool:
        """The LLM ordered the photos (kept for the `--json` contract: `rerank` says more)."""
        return self.rerank.state is RerankState.USED

    @property
    def message(self) -> str | None:
        """Every note's text on one line, in order; None without notes."""
        return NOTE_SEPARATOR.join(note.text for note in self.notes) or None

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "reranked": self.reranked,
            "message": self.message,
            "results": [r.__dict__.copy() for r in self.results],
            "timings_ms": dict(self.timings_ms),
            "nothing_fits": self.nothing_fits,
            "time_place": self.time_place,
            "notes": [{"kind": note.kind.value, "text": note.text} for note in self.notes],
            "rerank": self.rerank.to_dict(),
        }


@dataclass
class IndexReport:
    scanned: int = 0
    new: int = 0
    unchanged: int = 0
    moved: int = 0
    removed: int = 0
    described: int = 0
    embedded: int = 0
    failed: int = 0
    visual_embedded: int = 0  # photos whose pixels got a vector (similar-photo search)
    visual_failed: int = 0
    dates_ignored: int = 0  # new photos whose EXIF time was impossible (taken as unknown)
    skipped: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    cancelled: bool = False

    def to_dict(self) -> dict[str, Any]:
        keys = (
            "scanned",
            "new",
            "unchanged",
            "moved",
            "removed",
            "described",
            "embedded",
            "failed",
            "visual_embedded",
            "visual_failed",
            "dates_ignored",
        )
        out: dict[str, Any] = {k: getattr(self, k) for k in keys}
        out["skipped"] = dict(self.skipped)
        return out
