"""Where core exceptions become HTTP answers (each one's status and words: index/error_words.py).

Every error body is `{"detail": str, "message": str}`: `detail` in English for developers,
`message` the Chinese line for a person (a core error's row in index/error_words.py, else
server/messages.py); the web page shows only `message`.
A core error's body also names it (`"error": "IndexBusy"`), so a client (`client/`, used by the
bot and the CLI) gets the core's exception back without reading status codes or text.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from index.error_words import words_for
from index.errors import IndexBusy, PeiTuError, PhotoUnreadable
from server.messages import INTERNAL, message_for_status

log = logging.getLogger(__name__)

_REPR = re.compile(r"<[^<>]*(?: object at 0x[0-9a-fA-F]+|class '[^']*')[^<>]*>")
_INTERNAL = {"detail": "internal server error; see the server log", "message": INTERNAL}


class UploadTooLarge(HTTPException):
    """The request body is over the upload limit (an HTTPException so body parsing lets it by)."""

    def __init__(self, limit_bytes: int) -> None:
        mb = limit_bytes / (1024 * 1024)
        super().__init__(413, f"the upload is larger than the limit of {mb:g} MB")


def status_for(error: PeiTuError) -> int:
    """The HTTP status code for a core error (its row in `index/error_words.py`)."""
    return words_for(error).status


def error_body(error: PeiTuError) -> dict[str, Any]:
    """`{"detail", "message", "error"}` (`error`: the core error's class name), plus the
    running job's id for `IndexBusy` and the stable `reason` for `PhotoUnreadable`."""
    body: dict[str, Any] = {
        "detail": without_reprs(str(error)),  # Pillow names a BytesIO by its heap address
        "message": words_for(error).page,
        "error": type(error).__name__,
    }
    if isinstance(error, IndexBusy):
        return {**body, "job_id": error.running_job_id}
    if isinstance(error, PhotoUnreadable):
        detail = f"not a readable image ({error.reason}): {error.detail or error.reason}"
        return {**body, "detail": without_reprs(detail), "reason": error.reason}
    return body


async def _core_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, PeiTuError)
    status = status_for(error)
    log.log(
        logging.ERROR if status >= 500 else logging.INFO,
        "%s %s -> %d: %s",
        request.method,
        request.url.path,
        status,
        error,
    )
    return JSONResponse(error_body(error), status_code=status)


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    detail = without_reprs(error.detail if isinstance(error.detail, str) else str(error.detail))
    body = {"detail": detail, "message": message_for_status(error.status_code)}
    return JSONResponse(body, status_code=error.status_code, headers=error.headers)


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    body = {"detail": validation_message(error), "message": message_for_status(422)}
    return JSONResponse(body, status_code=422)


def validation_message(error: RequestValidationError) -> str:
    """One readable line per problem: `body.top_k: Input should be greater than or equal to 1`.

    Python reprs a message may carry (`<_io.BytesIO object at 0x…>`, `<class 'str'>`) are
    left out: they mean nothing to a person and tell a stranger about the server."""
    lines = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem.get("loc", ()))
        message = without_reprs(str(problem.get("msg", "invalid")))
        lines.append(f"{where}: {message}" if where else message)
    return "; ".join(lines) or "invalid request"


def without_reprs(text: str) -> str:
    """`text` with Python object and class reprs replaced by a plain word."""
    return _REPR.sub("a value", text)


async def _unexpected_error(request: Request, error: Exception) -> JSONResponse:
    log.exception("%s %s failed", request.method, request.url.path, exc_info=error)
    return JSONResponse(_INTERNAL, status_code=500)


class InternalErrors:
    """Answers an unexpected exception with a JSON 500 and keeps it from the ASGI server.

    Starlette's own last-resort handler re-raises after answering, and uvicorn then drops the
    connection, which can lose the answer; this middleware ends the request cleanly instead.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._app(scope, receive, watch)
        except Exception:
            log.exception("%s %s failed", scope.get("method"), scope.get("path"))
            if started:  # too late for another answer
                raise
            await JSONResponse(_INTERNAL, status_code=500)(scope, receive, send)


def install_error_handlers(api: FastAPI) -> None:
    """JSON `{"detail": ...}` for every error, and never a traceback in a response."""
    api.add_exception_handler(PeiTuError, _core_error)
    api.add_exception_handler(StarletteHTTPException, _http_error)
    api.add_exception_handler(RequestValidationError, _validation_error)
    api.add_exception_handler(Exception, _unexpected_error)  # errors in outer middleware
    api.add_middleware(InternalErrors)  # innermost middleware: sees every route's errors
