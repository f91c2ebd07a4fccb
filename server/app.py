"""The FastAPI application: routes, auth, error mapping, metrics, and the scheduler's lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from config import Settings
from index.indexing.journal import JobJournal
from server.auth import ApiGuard, require_admin
from server.context import ServerContext
from server.errors import UploadTooLarge, install_error_handlers
from server.jobs import JobManager
from server.messages import message_for_status
from server.metrics import Metrics, MetricsMiddleware
from server.ports import PhotoService
from server.routes import bot, doctor, health, jobs, page, photos, recommend
from server.scheduler import IndexScheduler, schedule_triggers
from server.security import SecurityHeaders
from server.slow_clients import BodyDeadline

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
UPLOAD_PATHS = frozenset({"/api/photos", "/api/search/similar"})
_MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the file itself
_ANY_API_PATH = "/api/{rest:path}"
_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]
MAX_JSON_BODY_BYTES = 64 * 1024  # {"text": ...} and {"mode": ...} are tiny


def create_app(core: PhotoService, settings: Settings) -> FastAPI:
    """The HTTP API over an already built core (`index.service.PeiTu`: the composition root builds
    it once)."""
    metrics = Metrics()
    journal = JobJournal(settings.data_dir.expanduser())
    job_manager = JobManager(core, listener=metrics.job_finished, journal=journal)
    scheduler = IndexScheduler(
        job_manager, schedule_triggers(settings.indexing), on_skip=metrics.schedule_skipped.inc
    )
    token = settings.admin_token.get_secret_value() if settings.admin_token else ""
    ctx = ServerContext(core, settings, job_manager, metrics, scheduler, token or None)
    api = FastAPI(
        title="PeiTu 配图",
        summary="Recommends photos from your own library for a piece of social-media text.",
        version="0.1.0",
        lifespan=_lifespan,
        docs_url=None,  # Swagger UI would load from a CDN: blank offline. /openapi.json stays
        redoc_url=None,
    )
    api.state.ctx = ctx
    install_error_handlers(api)
    api.add_middleware(UploadSizeLimit, max_body_bytes=ctx.max_upload_bytes + _MULTIPART_OVERHEAD)
    api.add_middleware(BodyDeadline, grace_s=settings.server.body_timeout_s)
    api.add_middleware(ApiGuard, expected=ctx.admin_token)  # outside the size limit: 401 first
    api.add_middleware(MetricsMiddleware, metrics=metrics)
    api.add_middleware(SecurityHeaders)  # outermost: every answer has them, a 401 too
    api.include_router(health.router)
    api.include_router(page.router)
    api.include_router(_api_router())
    api.add_api_route(
        _ANY_API_PATH, _no_such_route(api), methods=_ALL_METHODS, include_in_schema=False
    )
    api.openapi = _openapi_as_answered(api)  # type: ignore[method-assign]
    if (STATIC_DIR / "index.html").is_file():
        api.mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="web")
    return api


def _api_router() -> APIRouter:
    router = APIRouter(prefix="/api", dependencies=[Depends(require_admin)])
    for module in (recommend, jobs, photos, doctor, bot):
        router.include_router(module.router)
    return router


def _no_such_route(api: FastAPI) -> Callable[[Request], Awaitable[JSONResponse]]:
    """Under `/api`, a path no route has is 404 and a method its route lacks is 405 with
    `Allow` (instead of the web page's 404 for a GET on a POST route)."""

    async def answer(request: Request) -> JSONResponse:
        path = request.url.path
        allowed = _allowed_methods(api, dict(request.scope))
        if not allowed:
            body = {"detail": f"no such API route: {path}", "message": message_for_status(404)}
            return JSONResponse(body, status_code=404)
        detail = f"method {request.method} is not allowed here; use {', '.join(allowed)}"
        body = {"detail": detail, "message": message_for_status(405)}
        return JSONResponse(body, status_code=405, headers={"Allow": ", ".join(allowed)})

    return answer


def _allowed_methods(api: FastAPI, scope: dict[str, Any]) -> list[str]:
    """The methods some route (not the web page, not this fallback) takes for the path."""
    routes = [
        route
        for route in api.router.routes
        if not isinstance(route, Mount) and getattr(route, "path", None) != _ANY_API_PATH
    ]
    return [
        method
        for method in _ALL_METHODS
        if any(route.matches({**scope, "method": method})[0] is Match.FULL for route in routes)
    ]


def _openapi_as_answered(api: FastAPI) -> Callable[[], dict[str, Any]]:
    """The OpenAPI schema with the error answers the server really gives: `{"detail": str}`
    for 422 (not FastAPI's list), 401 on every `/api` route, 400 and 413 where a body is read,
    405 for a method a path lacks."""

    def schema() -> dict[str, Any]:
        if api.openapi_schema:
            return api.openapi_schema
        built = get_openapi(
            title=api.title, version=api.version, summary=api.summary, routes=api.routes
        )
        for path, item in built.get("paths", {}).items():
            for method, operation in item.items():
                _document_errors(path, method, operation.setdefault("responses", {}))
        components = built.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        for name, body in components.items():
            if name.startswith("Body_"):  # an upload form: its one `file`, nothing else
                body["additionalProperties"] = False
        api.openapi_schema = built
        return built

    return schema


def _document_errors(path: str, method: str, responses: dict[str, Any]) -> None:
    if "422" in responses:
        responses["422"] = _error_answer("the request does not fit: one line per problem")
    if not path.startswith("/api"):
        return
    responses.setdefault("401", _error_answer("missing or wrong bearer token"))
    responses.setdefault("405", _error_answer("this path does not take that method"))
    if method in ("post", "put", "patch"):
        responses.setdefault("400", _error_answer("the body could not be read"))
        responses.setdefault("413", _error_answer("the body is over the size limit"))


def _error_answer(description: str) -> dict[str, Any]:
    ref = {"$ref": "#/components/schemas/ErrorOut"}
    return {"description": description, "content": {"application/json": {"schema": ref}}}


@asynccontextmanager
async def _lifespan(api: FastAPI) -> AsyncIterator[None]:
    ctx: ServerContext = api.state.ctx
    # Before the first request (and the first job): what killed processes left behind.
    await asyncio.to_thread(ctx.core.clean_up_leftovers)
    warm_up = asyncio.create_task(asyncio.to_thread(ctx.warm_up))  # /readyz says 503 till then
    ctx.scheduler.start()
    try:
        yield
    finally:
        ctx.scheduler.shutdown()
        await asyncio.to_thread(ctx.jobs.shutdown)
        await warm_up
        ctx.probes.shutdown(wait=False)


class UploadSizeLimit:
    """Refuses bodies over the limit with 413 before they are read in or spooled to disk:
    uploads up to the upload limit, any other `/api` body (JSON) up to `MAX_JSON_BODY_BYTES`."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self._app = app
        self._max = max_body_bytes

    def _limit(self, path: str) -> tuple[int, HTTPException] | None:
        if path in UPLOAD_PATHS:
            return self._max, UploadTooLarge(self._max - _MULTIPART_OVERHEAD)
        if path.startswith("/api"):
            return MAX_JSON_BODY_BYTES, HTTPException(
                413, f"the request body is larger than {MAX_JSON_BODY_BYTES // 1024} KB"
            )
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self._limit(str(scope["path"])) if scope["type"] == "http" else None
        if limit is None:
            await self._app(scope, receive, send)
            return
        most, too_large = limit
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > most:
            body = {"detail": too_large.detail, "message": message_for_status(413)}
            response = JSONResponse(body, status_code=413)
            await response(scope, receive, send)
            return
        seen = 0

        async def counted() -> dict[str, object]:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > most:  # a chunked body that does not say its length
                raise too_large
            return dict(message)

        await self._app(scope, counted, send)
