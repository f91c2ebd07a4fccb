"""The FastAPI application: routes, auth, error mapping, metrics, and the scheduler's lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, HTTPException
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from config import Settings
from index.app import PeiTu
from server.auth import ApiGuard, require_admin
from server.context import ServerContext
from server.errors import UploadTooLarge, install_error_handlers
from server.jobs import JobManager
from server.metrics import Metrics, MetricsMiddleware
from server.routes import health, jobs, photos, recommend
from server.scheduler import IndexScheduler, schedule_triggers

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
UPLOAD_PATHS = frozenset({"/api/photos", "/api/search/similar"})
_MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the file itself
MAX_JSON_BODY_BYTES = 64 * 1024  # {"text": ...} and {"mode": ...} are tiny


def create_app(app: PeiTu, settings: Settings) -> FastAPI:
    """The HTTP API over an already built `PeiTu` (the composition root builds it once)."""
    metrics = Metrics()
    job_manager = JobManager(app, listener=metrics.job_finished)
    scheduler = IndexScheduler(
        job_manager, schedule_triggers(settings.indexing), on_skip=metrics.schedule_skipped.inc
    )
    token = settings.admin_token.get_secret_value() if settings.admin_token else ""
    ctx = ServerContext(app, settings, job_manager, metrics, scheduler, token or None)
    api = FastAPI(
        title="PeiTu 配图",
        summary="Recommends photos from your own library for a piece of social-media text.",
        version="0.1.0",
        lifespan=_lifespan,
    )
    api.state.ctx = ctx
    install_error_handlers(api)
    api.add_middleware(UploadSizeLimit, max_body_bytes=ctx.max_upload_bytes + _MULTIPART_OVERHEAD)
    api.add_middleware(ApiGuard, expected=ctx.admin_token)  # outside the size limit: 401 first
    api.add_middleware(MetricsMiddleware, metrics=metrics)
    api.include_router(health.router)
    api.include_router(_api_router())
    if (STATIC_DIR / "index.html").is_file():
        api.mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="web")
    return api


def _api_router() -> APIRouter:
    router = APIRouter(prefix="/api", dependencies=[Depends(require_admin)])
    for module in (recommend, jobs, photos):
        router.include_router(module.router)
    return router


@asynccontextmanager
async def _lifespan(api: FastAPI) -> AsyncIterator[None]:
    ctx: ServerContext = api.state.ctx
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
            response = JSONResponse({"detail": too_large.detail}, status_code=413)
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
