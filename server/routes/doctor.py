"""The first-run checks of `peitu doctor`, for the web page's 运行检查."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from pydantic import BaseModel, Field

from index.doctor import run_checks
from server.context import Ctx

router = APIRouter(tags=["index"])


class CheckOut(BaseModel):
    name: str = Field(description="library, data_dir, embedding, vision, rerank or token")
    level: str = Field(description="ok, warn or fail")
    title: str = Field(description="what was checked, in Chinese")
    message: str = Field(description="what was found and the fix, in Chinese")


class DoctorOut(BaseModel):
    checks: list[CheckOut]


@router.get("/doctor", response_model=DoctorOut)
async def doctor(ctx: Ctx) -> DoctorOut:
    """Library readable, embedding model present, endpoints answer, token set, data writable."""
    checks = await asyncio.to_thread(run_checks, ctx.settings)
    return DoctorOut(checks=[CheckOut(**check.to_dict()) for check in checks])
