"""What a PeiTu server's answers mean: its JSON read back into the core's records, and its error
answers turned back into the core's exceptions (or this client's own, for what is not the core's).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from index.error_words import BY_NAME
from index.errors import IndexBusy, InvalidQuery, PeiTuError, PhotoUnreadable, Reason
from index.models import Note, NoteKind, Recommendation, RecommendResult, Rerank, RerankState


class ServerUnavailable(PeiTuError):
    """The PeiTu server did not answer, or answered something this client cannot use."""


class ServerUnreachable(ServerUnavailable):
    """Nothing answered at the server's address (no connection, or no answer in time)."""


class ServerRefused(ServerUnavailable):
    """The server refused the token (401/403): a setting to fix, not a moment to wait."""


class NotFound(ServerUnavailable):
    """404 from the server: no such photo in its index, or no such route (not a PeiTu server)."""


@dataclass(frozen=True)
class Caller:
    """Who asks the server: how its refused-token line names the server and the token, and the
    settings a person fixes when the server refuses it or is not a PeiTu server."""

    server: str  # "the server", "the PeiTu server http://…"
    token: str  # "the bot's token", "the token"
    url_setting: str  # "PEITU_SERVER__URL"
    token_setting: str  # "PEITU_ADMIN_TOKEN"


ANY_CALLER = Caller("the server", "the token", "the server's address", "the token setting")


@dataclass(frozen=True)
class ServerStatus:
    """`GET /api/status`: photos findable, the last index run, whether one runs, any problem."""

    photos: int
    last_index_at: datetime | None
    indexing: bool
    problem: str | None


def error_for(
    status: int, body: dict[str, Any], caller: Caller = ANY_CALLER, url: str = "", path: str = ""
) -> PeiTuError:
    """The exception for an error answer: this client's own for a refused token and a 404; the
    core's own when the body names one (`"error"`, `server/errors.py`); `InvalidQuery` for a
    request refused as it is; else `ServerUnavailable`."""
    detail = detail_of(body.get("detail")) or f"HTTP {status}"
    if status in (401, 403):
        return ServerRefused(
            f"{caller.server} refused {caller.token} ({status}: {detail}): set "
            f"{caller.token_setting} to the server's PEITU_ADMIN_TOKEN"
        )
    if status == 404:
        return NotFound(
            f"{url}{path} not found ({detail}): is {caller.url_setting} a PeiTu server?"
        )
    named = BY_NAME.get(str(body.get("error")))
    if named is not None:
        return _core_error(named, body, detail)
    if status in (400, 422):  # a text refused as it is (blank, too long)
        return InvalidQuery(detail)
    return ServerUnavailable(f"the PeiTu server {url} answered {status}: {detail}")


def _core_error(kind: type[PeiTuError], body: dict[str, Any], detail: str) -> PeiTuError:
    if kind is IndexBusy:
        job_id = body.get("job_id")
        return IndexBusy(str(job_id) if job_id is not None else None)
    if kind is PhotoUnreadable:
        return PhotoUnreadable("image", Reason.parse(str(body.get("reason") or "")), detail)
    return kind(detail)


def detail_of(detail: object) -> str:
    """An error body's `detail`: a string, or (FastAPI's own 422) a list of problems."""
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        first = detail[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        return f"{where}: {first.get('msg', '')}" if where else str(first.get("msg", ""))
    return str(detail or "")


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
            f"unexpected recommendation answer (a server older than the bot or the CLI?): {error!r}"
        ) from error


def status_from_json(answer: dict[str, Any]) -> ServerStatus:
    """A `ServerStatus` from the JSON of `/api/status`."""
    try:
        last = answer["last_index_at"]
        return ServerStatus(
            photos=int(answer["photos"]),
            last_index_at=datetime.fromisoformat(last) if last else None,
            indexing=bool(answer["indexing"]),
            problem=answer["problem"],
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ServerUnavailable(f"unexpected /api/status answer: {error!r}") from error
