"""Indexing jobs: start one, follow it, list them, cancel one; and the index status."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Response, status

from server.context import Ctx, ServerContext
from server.jobs import JobView
from server.schemas import BusyOut, ErrorOut, JobCreatedOut, JobIn, JobListOut, JobOut, StatusOut

if TYPE_CHECKING:
    from index.service import IndexStatus

router = APIRouter(tags=["index"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut}}


def _known(job: JobView | None, job_id: str) -> JobView:
    if job is None:
        raise HTTPException(404, f"no indexing job {job_id} (only recent jobs are kept)")
    return job


@router.post(
    "/index/jobs",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobCreatedOut,
    responses={409: {"model": BusyOut, "description": "a job is running; `job_id` is its id"}},
)
async def start_job(
    ctx: Ctx, response: Response, body: Annotated[JobIn | None, Body()] = None
) -> JobCreatedOut:
    """Start an indexing job; 409 with the running job's id if one runs (here or in the CLI)."""
    options = body if body is not None else JobIn()
    job = await asyncio.to_thread(_start, ctx, options)
    response.headers["Location"] = f"/api/index/jobs/{job.job_id}"
    return JobCreatedOut(job_id=job.job_id, state=job.state)


def _start(ctx: ServerContext, options: JobIn) -> JobView:
    describer = ctx.describer(options.describer) if options.describer else None
    return ctx.jobs.start(options.mode, "api", redescribe=options.redescribe, describer=describer)


@router.get("/index/jobs", response_model=JobListOut)
async def list_jobs(ctx: Ctx) -> JobListOut:
    """The last 20 jobs, newest first: this server's and the CLI's (from the data folder)."""
    recent = await asyncio.to_thread(ctx.jobs.recent)  # reads the journal in the data folder
    return JobListOut(jobs=[JobOut.of(job) for job in recent])


@router.get("/index/jobs/{job_id}", response_model=JobOut, responses=_NOT_FOUND)
async def get_job(job_id: str, ctx: Ctx) -> JobOut:
    """State, progress (phase, done, total), counts, errors and times of one job."""
    job = await asyncio.to_thread(ctx.jobs.get, job_id)
    return JobOut.of(_known(job, job_id))


@router.post(
    "/index/jobs/{job_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    responses={**_NOT_FOUND, 409: {"model": ErrorOut}},
)
async def cancel_job(job_id: str, ctx: Ctx) -> JobOut:
    """Ask a job to stop at its next checkpoint; what was done so far is kept."""
    job = ctx.jobs.cancel(job_id)
    if job is None:
        external = await asyncio.to_thread(ctx.jobs.get, job_id)
        if external is not None:
            raise HTTPException(409, f"job {job_id} runs in another process; stop it there")
    job = _known(job, job_id)
    if job.finished:
        raise HTTPException(409, f"job {job_id} has already finished ({job.state})")
    return JobOut.of(job)


@router.get("/status", response_model=StatusOut)
async def index_status(ctx: Ctx) -> StatusOut:
    """How many photos are indexed, when the last run was, whether one runs now."""
    current, holder = await asyncio.to_thread(_status_and_holder, ctx)
    return StatusOut(
        photos=current.photos,
        files=current.files,
        last_index_at=current.last_index_at,
        indexing=current.indexing,
        problem=current.problem,
        running_job_id=holder,
        next_scheduled_index_at=ctx.scheduler.next_run_at(),
        tiers=current.tiers,
    )


def _status_and_holder(ctx: ServerContext) -> tuple[IndexStatus, str | None]:
    """The index status and the id of the job running now (ours, or another process's)."""
    current = ctx.core.status()
    ours = ctx.jobs.running()
    anywhere = ctx.core.running_job() if ours is None and current.indexing else None
    holder = ours.job_id if ours else (anywhere.job_id if anywhere else None)
    return current, holder
