"""Download the image of a WeChat message from the puppet service, whatever its size.

python-wechaty 0.10.7 asks with the unary `MessageImage` call and can only read the answer when
it is a base64 file box. Puppet services from 1.0 on answer with a UUID file box for anything
over 20 KB (so for every real photo), which that client cannot read. The streaming
`MessageImageStream` call sends the bytes in chunks from every server version that has it;
servers without it still answer the unary call with base64.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError
from wechaty_grpc.wechaty.puppet import ImageType

from bot.errors import ImageDownloadFailed

MAX_IMAGE_BYTES = 50 * 1024 * 1024  # more than any phone photo; refuse anything bigger
_BASE64_BOX = 1  # FileBoxType.Base64 in file-box's JSON


async def download_image(stub: Any, message_id: str) -> bytes:
    """The original image of message `message_id`. Raises `ImageDownloadFailed`."""
    try:
        return await _by_stream(stub, message_id)
    except GRPCError as error:
        if error.status is not Status.UNIMPLEMENTED:
            raise ImageDownloadFailed(f"{error.status.name}: {error.message}") from error
    response = await stub.message_image(id=message_id, type=ImageType.IMAGE_TYPE_ARTWORK)
    return _base64_box_bytes(response.filebox)


async def _by_stream(stub: Any, message_id: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    stream = stub.message_image_stream(id=message_id, type=ImageType.IMAGE_TYPE_ARTWORK)
    async for response in stream:
        data = response.file_box_chunk.data  # the first chunk carries the name instead
        size += len(data)
        if size > MAX_IMAGE_BYTES:
            raise ImageDownloadFailed(f"image is over {MAX_IMAGE_BYTES} bytes")
        chunks.append(data)
    if not size:
        raise ImageDownloadFailed("the puppet service sent an empty image")
    return b"".join(chunks)


def _base64_box_bytes(box_json: str) -> bytes:
    try:
        box = json.loads(box_json)
        if box.get("boxType") != _BASE64_BOX:
            raise ImageDownloadFailed(f"cannot read a file box of type {box.get('boxType')}")
        return base64.b64decode(box["base64"])
    except (ValueError, KeyError, AttributeError, binascii.Error) as error:
        raise ImageDownloadFailed(f"unreadable file box: {error}") from error
