"""The WeChat bot's pairing, for a bot that asks this server (`PEITU_BOT__SERVER_URL`): the code
and the people paired are kept in this server's data folder (`index.library.pairing`)."""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from index.library.pairing import Pairing
from server.context import Ctx

router = APIRouter(prefix="/bot", tags=["bot"])


class PairedOut(BaseModel):
    contact_id: str
    name: str
    paired_at: str = Field(description="when, ISO 8601 in UTC")


class PairingOut(BaseModel):
    code: str = Field(description="the code that lets the next person in (/绑定 CODE)")
    paired: list[PairedOut]


class PairIn(BaseModel):
    code: str = Field(max_length=20, description="what the person sent after /绑定")
    contact_id: str = Field(min_length=1, max_length=200)
    name: str = Field(max_length=200)


class PairOut(BaseModel):
    outcome: Literal["paired", "already", "wrong", "locked"]


class NewCodeIn(BaseModel):
    why: str = Field(max_length=200, description="why the old code may no longer be used")


class CodeOut(BaseModel):
    code: str


@router.get("/pairing", response_model=PairingOut)
async def pairing(ctx: Ctx) -> PairingOut:
    """The pairing code (made when there is none) and the people paired, oldest first."""
    access = ctx.core.bot_access
    code = await asyncio.to_thread(access.code)
    paired = await asyncio.to_thread(access.paired)
    return PairingOut(code=code, paired=[PairedOut(**vars(p)) for p in paired])


@router.post("/pairing", response_model=PairOut)
async def pair(body: PairIn, ctx: Ctx) -> PairOut:
    """Let the contact in when the code is right (the code is then replaced)."""
    outcome: Pairing = await asyncio.to_thread(
        ctx.core.bot_access.pair, body.code, body.contact_id, body.name
    )
    return PairOut(outcome=outcome.value)


@router.post("/pairing/new-code", response_model=CodeOut)
async def new_code(body: NewCodeIn, ctx: Ctx) -> CodeOut:
    """Replace the code now (it was seen by others)."""
    return CodeOut(code=await asyncio.to_thread(ctx.core.bot_access.replace_code, body.why))
