"""Liveness, readiness and Prometheus metrics (no auth: they reveal no photos)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from index.errors import ModelUnavailable
from server.context import Ctx
from server.messages import message_for_status
from server.schemas import ErrorOut, HealthOut, ReadyOut

router = APIRouter(tags=["health"])

_NOT_READY: dict[int | str, dict[str, Any]] = {503: {"model": ErrorOut}}


@router.get("/healthz", response_model=HealthOut)
async def healthz() -> HealthOut:
    """The process is up and answering."""
    return HealthOut()


@router.get("/readyz", response_model=ReadyOut, responses=_NOT_READY)
async def readyz(ctx: Ctx) -> ReadyOut | JSONResponse:
    """Ready to recommend: the embedding model is loaded and the vector store answers."""
    try:
        ready = await ctx.probe(ctx.check_ready)
    except ModelUnavailable as error:
        body = {"detail": f"not ready: {error}", "message": message_for_status(503)}
        return JSONResponse(body, status_code=503)
    return ReadyOut(
        ready=True,
        embedding_model=ready.embedding_model,
        photos=ready.photos,
        problem=ready.problem,
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
async def metrics(ctx: Ctx) -> Response:
    """Prometheus metrics: requests, latency, indexing jobs, photos indexed."""
    current = await ctx.probe(ctx.core.readiness)  # no count of the library per scrape
    ctx.metrics.photos_indexed.set(current.photos)
    ctx.metrics.jobs_running.set(1 if current.indexing else 0)
    return Response(ctx.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
