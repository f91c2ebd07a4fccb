"""Photos: upload one into the library, look one up, show it, take it out of the index."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Annotated, Any, BinaryIO
from urllib.parse import quote

from fastapi import APIRouter, File, HTTPException, Query, Request, Response, UploadFile, status
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse

from index.errors import PhotoUnreadable
from index.library.imaging import Reason, thumbnail_jpeg
from index.library.names import readable_path
from index.records import PhotoDetails
from server.context import Ctx, ServerContext
from server.schemas import DeletedOut, ErrorOut, PhotoOut, UploadOut
from server.uploads import check_image, read_upload, safe_file_name

router = APIRouter(tags=["photos"])

PhotoId = Annotated[str, PathParam(pattern="^[0-9a-f]{64}$", description="sha256 of the file")]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut}}
_UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (409, 413, 415)
}
_MEDIA_TYPES = {
    "jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp",
    "bmp": "image/bmp", "gif": "image/gif", "heic": "image/heic", "heif": "image/heif",
    "tif": "image/tiff", "tiff": "image/tiff",
}  # fmt: skip
_CHUNK_BYTES = 256 * 1024
_UPLOAD_MESSAGES = {
    "started": "照片已保存，索引任务 {job} 已开始",
    "queued": "照片已保存；索引任务 {job} 正在运行，结束后会再索引一次新照片",
    "busy": "照片已保存；另一个进程正在索引（任务 {job}），它结束后会自动再索引一次新照片",
}


def _details(ctx: ServerContext, photo_id: str) -> PhotoDetails:
    details = ctx.core.photo_details(photo_id)
    if details is None:
        raise HTTPException(404, f"no photo {photo_id} in the index")
    return details


def _open_photo(ctx: ServerContext, photo_id: str) -> tuple[PhotoDetails, BinaryIO]:
    """The photo's file, opened only if it really is a regular file inside the library."""
    details = _details(ctx, photo_id)
    handle = ctx.core.open_photo(photo_id)
    if handle is None:
        raise HTTPException(404, f"photo {photo_id} is no longer in the library; reindex")
    return details, handle


def _photo_bytes(ctx: ServerContext, photo_id: str, max_bytes: int) -> bytes:
    _, opened = _open_photo(ctx, photo_id)
    with opened as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise PhotoUnreadable(photo_id, Reason.TOO_LARGE.value, f"more than {max_bytes} bytes")
    return data


def _chunks(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(_CHUNK_BYTES):
            yield chunk


def _inline(name: str) -> str:
    quoted = quote(name)
    return f"inline; filename*=utf-8''{quoted}" if quoted != name else f'inline; filename="{name}"'


@router.post(
    "/photos",
    status_code=status.HTTP_201_CREATED,
    response_model=UploadOut,
    responses=_UPLOAD_ERRORS,
)
async def upload_photo(
    file: Annotated[UploadFile, File(description="a photo (JPEG, PNG, WebP, HEIC, ...)")],
    ctx: Ctx,
    request: Request,
) -> UploadOut:
    """Save a photo into `<library>/uploads/` and start indexing it (one photo a request)."""
    data = await read_upload(request, file, ctx.max_upload_bytes)
    max_pixels = ctx.settings.indexing.max_pixels
    image = await asyncio.to_thread(check_image, data, max_pixels=max_pixels, max_bytes=len(data))
    name = safe_file_name(file.filename, image.image_format)
    accepted = await asyncio.to_thread(ctx.core.accept_upload, data, name)
    indexing, job_id = await asyncio.to_thread(ctx.jobs.start_or_follow, "upload")
    return UploadOut(
        photo_id=accepted.photo_id,
        path=accepted.rel_path,
        width=image.width,
        height=image.height,
        status=indexing,
        job_id=job_id,
        indexed=accepted.already_indexed,
        message=_UPLOAD_MESSAGES[indexing].format(job=job_id),
    )


def _photo_out(ctx: ServerContext, photo_id: str) -> PhotoOut:
    details = _details(ctx, photo_id)
    photo, stored = details.photo, details.description
    return PhotoOut(
        photo_id=photo_id,
        path=readable_path(photo.rel_path),
        size=photo.size,
        width=photo.width,
        height=photo.height,
        taken_at=photo.taken_at,
        gps_lat=photo.gps_lat,
        gps_lon=photo.gps_lon,
        description=stored.description if stored else None,
        describer=stored.describer_key if stored else None,
        describer_tier=stored.tier if stored else None,
        indexed=details.indexed,
    )


@router.get("/photos/{photo_id}", response_model=PhotoOut, responses=_NOT_FOUND)
async def get_photo(photo_id: PhotoId, ctx: Ctx) -> PhotoOut:
    """Where the photo is, its size, time and place, and its description."""
    return await asyncio.to_thread(_photo_out, ctx, photo_id)


@router.get(
    "/photos/{photo_id}/thumbnail",
    response_class=Response,
    responses={**_NOT_FOUND, 200: {"content": {"image/jpeg": {}}, "description": "a JPEG"}},
)
async def get_thumbnail(
    photo_id: PhotoId,
    ctx: Ctx,
    request: Request,
    size: Annotated[int, Query(ge=32, le=2048, description="longest side in pixels")] = 320,
) -> Response:
    """A JPEG no larger than `size` on its long side (EXIF, and so GPS, stripped)."""
    etag = f'"{photo_id[:16]}-{size}"'  # a photo id is its content: the thumbnail never changes
    headers = {"ETag": etag, "Cache-Control": "private, max-age=86400"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    limits = ctx.settings.indexing
    max_bytes = int(limits.max_file_mb * 1024 * 1024)
    data = await asyncio.to_thread(_photo_bytes, ctx, photo_id, max_bytes)
    jpeg = await asyncio.to_thread(thumbnail_jpeg, data, size, max_pixels=limits.max_pixels)
    return Response(jpeg, media_type="image/jpeg", headers=headers)


@router.get(
    "/photos/{photo_id}/file",
    response_class=StreamingResponse,
    responses={**_NOT_FOUND, 200: {"content": {"image/*": {}}, "description": "the original"}},
)
async def get_file(photo_id: PhotoId, ctx: Ctx) -> StreamingResponse:
    """The original file, as it is in the library (never a file outside it)."""
    details, handle = await asyncio.to_thread(_open_photo, ctx, photo_id)
    name = readable_path(PurePosixPath(details.photo.rel_path).name)
    media_type = _MEDIA_TYPES.get(name.rsplit(".", 1)[-1].lower(), "application/octet-stream")
    headers = {
        "Content-Length": str(os.fstat(handle.fileno()).st_size),
        "Content-Disposition": _inline(name),
    }
    return StreamingResponse(_chunks(handle), media_type=media_type, headers=headers)


def _delete(ctx: ServerContext, photo_id: str, delete_file: bool) -> DeletedOut:
    deleted = ctx.core.remove_photo(photo_id, delete_file=delete_file)
    if deleted is None:
        raise HTTPException(404, f"no photo {photo_id} in the index")
    relative = [readable_path(rel_path) for rel_path in deleted]
    return DeletedOut(photo_id=photo_id, removed_from_index=True, files_deleted=relative)


@router.delete("/photos/{photo_id}", response_model=DeletedOut, responses=_NOT_FOUND)
async def delete_photo(
    photo_id: PhotoId,
    ctx: Ctx,
    delete_file: Annotated[bool, Query(description="also delete the file from disk")] = False,
) -> DeletedOut:
    """Take a photo out of the index for good; later scans skip it while its file remains."""
    return await asyncio.to_thread(_delete, ctx, photo_id, delete_file)
