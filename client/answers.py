"""What a PeiTu server's answers mean (moved from `bot/server_client.py`)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from index.errors import (
    CatalogTooNew,
    DescribeFailed,
    DiskFull,
    IndexBusy,
    IndexMismatch,
    InvalidQuery,
    LibraryNotFound,
    ModelUnavailable,
    PeiTuError,
    PhotoChanged,
    PhotoUnreadable,
    Reason,
    RerankFailed,
)
from index.models import Note, NoteKind, Recommendation, RecommendResult, Rerank, RerankState


class ServerUnavailable(PeiTuError):
    """The PeiTu server did not answer, or answered something the bot cannot use."""


class PhotoGone(ServerUnavailable):
    """404 from the server: no such photo in its index, or its file left the library."""


class ServerRefused(ServerUnavailable):
    """The server refused the bot's token (401/403): a setting to fix, not a moment to wait."""


@dataclass(frozen=True)
class ServerStatus:
    """`GET /api/status` as the bot reports it (`bot.ports.IndexStatusView`)."""

    photos: int
    last_index_at: datetime | None
    indexing: bool
    problem: str | None


# The core errors a server's error body can name (`"error"`, see `server/errors.py`).
_CORE_ERRORS: dict[str, type[PeiTuError]] = {
    kind.__name__: kind
    for kind in (
        InvalidQuery,
        IndexBusy,
        IndexMismatch,
        LibraryNotFound,
        PhotoUnreadable,
        DescribeFailed,
        PhotoChanged,
        RerankFailed,
        ModelUnavailable,
        CatalogTooNew,
        DiskFull,
    )
}


def error_for(status: int, body: dict[str, Any]) -> PeiTuError:
    """The core's exception for an error answer of the server: the one its body names
    (`"error"`, `server/errors.py`); the bot's own kinds for a refused token, a 404 and the rest."""
    detail = str(body.get("detail") or f"HTTP {status}")
    if status in (401, 403):
        return ServerRefused(
            f"the server refused the bot's token ({status}: {detail}): set PEITU_BOT__SERVER_TOKEN "
            "or PEITU_ADMIN_TOKEN to the server's PEITU_ADMIN_TOKEN"
        )
    if status == 404:
        return PhotoGone(f"not found ({detail}); is PEITU_BOT__SERVER_URL a PeiTu server?")
    kind = _CORE_ERRORS.get(str(body.get("error")))
    if kind is IndexBusy:
        job_id = body.get("job_id")
        return IndexBusy(str(job_id) if job_id is not None else None)
    if kind is PhotoUnreadable:
        return PhotoUnreadable("image", Reason.parse(str(body.get("reason") or "")), detail)
    if kind is not None:
        return kind(detail)
    return ServerUnavailable(f"HTTP {status}: {detail}")


def result_from_json(answer: dict[str, Any]) -> RecommendResult:
    """A `RecommendResult` from the JSON of `/api/recommend` (extra keys are ignored)."""
    try:
        names = [field.name for field in fields(Recommendation)]
        results = [
            Recommendation(**{name: item[name] for name in names}) for item in answer["results"]
        ]
        rerank = answer["rerank"]
        return RecommendResult(
            query=answer["query"],
            results=results,
            timings_ms=dict(answer.get("timings_ms") or {}),
            notes=tuple(Note(NoteKind(n["kind"]), str(n["text"])) for n in answer["notes"]),
            rerank=Rerank(RerankState(rerank["state"]), rerank["reason"]),
            nothing_fits=bool(answer["nothing_fits"]),
            time_place=answer["time_place"],
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ServerUnavailable(
            f"unexpected recommendation answer (a server older than the bot?): {error!r}"
        ) from error
