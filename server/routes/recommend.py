"""Recommending photos for a text, and finding photos like an uploaded one."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, File, HTTPException, Query, Request, UploadFile
from fastapi import Path as PathParam

from index.errors import InvalidQuery
from server.context import Ctx
from server.schemas import ErrorOut, RecommendIn, RecommendOut, is_blank
from server.uploads import read_upload

router = APIRouter(tags=["recommend"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 409, 502, 503)
}


@router.post("/recommend", response_model=RecommendOut, responses=_ERRORS)
async def recommend(body: RecommendIn, ctx: Ctx) -> dict[str, Any]:
    """Photos for a social-media text: the same JSON as `peitu recommend --json`."""
    if is_blank(body.text):
        raise InvalidQuery("请给出要配图的文字（text is empty）")
    result = await asyncio.to_thread(
        ctx.core.recommend,
        body.text,
        body.top_k,
        rerank=body.rerank,
        time_place=body.time_place,
        closest=body.closest,
    )
    return result.to_dict()


@router.post(
    "/search/similar",
    response_model=RecommendOut,
    responses={**_ERRORS, 413: {"model": ErrorOut}, 415: {"model": ErrorOut}},
)
async def similar(
    file: Annotated[UploadFile, File(description="an image (JPEG, PNG, WebP, HEIC, ...)")],
    ctx: Ctx,
    request: Request,
    top_k: Annotated[int | None, Query(ge=1, le=100)] = None,
) -> dict[str, Any]:
    """Photos that look like the uploaded one (visual vectors); copies and bursts of one moment
    come once, the copy of the upload itself first."""
    data = await read_upload(request, file, ctx.max_upload_bytes)
    # The core decodes it once, at the size the model needs, within the query budget
    # (`index.library.imaging.QUERY_BUDGET`), and refuses what is not an image.
    result = await asyncio.to_thread(ctx.core.similar_to_image, data, top_k)
    return result.to_dict()


@router.get(
    "/photos/{photo_id}/similar",
    response_model=RecommendOut,
    responses={**_ERRORS, **{code: {"model": ErrorOut} for code in (404, 413, 415)}},
)
async def similar_to_photo(
    photo_id: Annotated[str, PathParam(pattern="^[0-9a-f]{64}$", description="sha256 of the file")],
    ctx: Ctx,
    top_k: Annotated[int | None, Query(ge=1, le=100)] = None,
) -> dict[str, Any]:
    """Photos that look like one of the library's (not the photo itself)."""
    result = await asyncio.to_thread(ctx.core.similar_to_photo, photo_id, top_k)
    if result is None:
        raise HTTPException(404, f"no photo {photo_id} in the library")
    return result.to_dict()
