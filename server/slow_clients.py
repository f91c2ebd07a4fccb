"""Slow clients are not held for ever: their headers and their body each get a deadline.

A client that opens a connection and trickles its request a byte at a time would otherwise hold
a connection (and, for an upload, the request's worker) for as long as it likes. uvicorn closes
idle keep-alive connections, but not one that sends slowly.

- Headers: a request's headers must be complete within `header_timeout_s` of the connection
  opening or the previous answer (`with_header_timeout`, around uvicorn's HTTP protocol).
- Body: it must arrive at `min_body_rate` bytes a second on average, after a grace of
  `body_grace_s` (`BodyDeadline`, an ASGI middleware): a 50 MB photo over a slow home uplink
  passes, a trickle is cut off with 408.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from server.messages import message_for_status

log = logging.getLogger(__name__)

HEADER_TIMEOUT_S = 10.0
BODY_GRACE_S = 30.0
MIN_BODY_RATE = 32 * 1024  # bytes a second


def timeout_answer() -> bytes:
    """A whole HTTP 408 answer that closes the connection (the app never saw the request)."""
    body = json.dumps(
        {"detail": "the request's headers came too slowly", "message": message_for_status(408)},
        ensure_ascii=False,
    ).encode("utf-8")
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def with_header_timeout(timeout_s: float = HEADER_TIMEOUT_S) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools, else h11), closing a connection with 408 when no
    request's headers are complete within `timeout_s` of it opening or of the last answer."""
    base: Any = AutoHTTPProtocol

    class HeaderTimeoutProtocol(base):  # type: ignore[misc]
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            self._await_headers()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._await_headers()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            super().connection_lost(exc)

        def _await_headers(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            waiting_for = self.cycle  # a new request replaces it once its headers are complete
            self._header_timer = self.loop.call_later(timeout_s, self._too_slow, waiting_for)

        def _too_slow(self, waiting_for: object) -> None:
            self._header_timer = None
            if self.cycle is not waiting_for or self.transport.is_closing():
                return  # headers came: the request is being answered
            log.info("closed a connection from %s: its headers came too slowly", self.client)
            self.transport.write(timeout_answer())
            self.transport.close()

    return HeaderTimeoutProtocol


class BodyDeadline:
    """Answers 408 when a request body arrives slower than `min_rate` bytes a second on
    average, counted after `grace_s` (the first wait for it included)."""

    def __init__(
        self, app: ASGIApp, grace_s: float = BODY_GRACE_S, min_rate: float = MIN_BODY_RATE
    ) -> None:
        self._app = app
        self._grace_s = grace_s
        self._min_rate = min_rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.monotonic()
        received = 0
        whole = False

        async def in_time() -> Message:
            nonlocal received, whole
            if whole:  # the body is in: later waits are for the client to hang up
                return await receive()
            allowed = self._grace_s + received / self._min_rate - (time.monotonic() - started)
            try:
                message = await asyncio.wait_for(receive(), timeout=max(allowed, 0.001))
            except TimeoutError:
                log.info("a request body came too slowly (%d bytes in time): 408", received)
                raise HTTPException(408, "the request body came too slowly") from None
            received += len(message.get("body", b""))
            whole = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self._app(scope, in_time, send)
