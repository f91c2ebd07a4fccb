"""Bearer-token auth for `/api/*`, and the loopback rule for a server without a token."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import re
import time
from collections import deque
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from server.messages import message_for_status

log = logging.getLogger(__name__)

_bearer = HTTPBearer(auto_error=False, description="the PEITU_ADMIN_TOKEN of the server")
_BEARER = re.compile(r"Bearer (\S+)")
WRONG_TOKEN = "wrong admin token"
BACKOFF_AFTER = 5  # wrong tokens from one address within a minute before answers slow down
BACKOFF_S = 1.0
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
_OTHER_SITES = frozenset({"cross-site", "same-site"})  # Sec-Fetch-Site of another page
CROSS_SITE = (
    "no admin token is configured: /api refuses requests from other websites (Sec-Fetch-Site, "
    "Referer); set PEITU_ADMIN_TOKEN to use the API from elsewhere"
)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and the usual names of the local host."""
    name = host.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def token_matches(given: str, expected: str) -> bool:
    """Constant-time comparison, so the time taken tells nothing about the token."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def auth_problem(
    expected: str | None,
    authorization: str | None,
    client: str,
    host_header: str,
    origin: str | None,
    fetch_site: str | None = None,
    referer: str | None = None,
) -> str | None:
    """Why a request to `/api` is refused, or None when it may go on.

    With a token: the bearer token must match. Without one (a loopback-only server): the client,
    the Host it asked for and any Origin must all be this machine, so neither another machine nor
    a web page the user visits (cross-site request, DNS rebinding) can drive the admin API. A
    page elsewhere cannot even show a photo with `<img src>` (a GET without Origin): a browser
    says where a request comes from (`Sec-Fetch-Site`, `Referer`), and only this server's own
    page, or no page at all (a typed address, curl, the CLI), is answered."""
    if expected is None:
        local = is_loopback(client) and is_loopback(_host_name(host_header))
        if not local or (origin is not None and not _origin_is_loopback(origin)):
            return "no admin token is configured: /api answers this machine's own clients only"
        if fetch_site in _OTHER_SITES or (referer and not _origin_is_loopback(referer)):
            return CROSS_SITE
        return None
    given = bearer_token(authorization)
    if given is None:
        return "missing bearer token: send 'Authorization: Bearer <PEITU_ADMIN_TOKEN>'"
    if not token_matches(given, expected):
        log.warning("wrong admin token from %s", client or "?")
        return WRONG_TOKEN
    return None


def bearer_token(authorization: str | None) -> str | None:
    """The token of exactly `Bearer <token>`: the scheme spelled so (case-sensitive), one
    space, a token without white space, nothing before or after; None for anything else."""
    match = _BEARER.fullmatch(authorization or "")
    return match.group(1) if match else None


def _host_name(host_header: str) -> str:
    """The host part of a Host header ("127.0.0.1:8000", "[::1]:8000", "localhost")."""
    if host_header.startswith("["):
        return host_header[1:].partition("]")[0]
    return host_header.rpartition(":")[0] if host_header.count(":") == 1 else host_header


def _origin_is_loopback(origin: str) -> bool:
    return is_loopback(_host_name(urlsplit(origin).netloc)) if origin != "null" else False


def require_admin(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Dependency of every `/api` route (`_credentials` puts the bearer scheme in OpenAPI);
    `ApiGuard` has already refused bad requests before their body was read: a second line."""
    problem = auth_problem(
        request.app.state.ctx.admin_token,
        request.headers.get("authorization"),
        request.client.host if request.client else "",
        request.headers.get("host", ""),
        request.headers.get("origin"),
        request.headers.get("sec-fetch-site"),
        request.headers.get("referer"),
    )
    if problem is not None:
        raise _unauthorized(problem)


class ApiGuard:
    """Refuses unauthorised `/api` requests with 401 before their body is read, so nobody
    without the token can make the server take in a large body."""

    def __init__(self, app: ASGIApp, expected: str | None) -> None:
        self._app = app
        self._expected = expected
        self._wrong = WrongTokens()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope["path"]).startswith("/api"):
            await self._app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        client = scope.get("client")
        problem = auth_problem(
            self._expected,
            headers.get("authorization"),
            client[0] if client else "",
            headers.get("host", ""),
            headers.get("origin"),
            headers.get("sec-fetch-site"),
            headers.get("referer"),
        )
        if problem is None:
            await self._app(scope, receive, send)
            return
        address = client[0] if client else ""
        if problem == WRONG_TOKEN and self._wrong.count(address) > BACKOFF_AFTER:
            await asyncio.sleep(BACKOFF_S)  # guessing slows down; other requests go on
        body = {"detail": problem, "message": message_for_status(401)}
        response = JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)


class WrongTokens:
    """Wrong tokens per address within the last minute (the oldest addresses forgotten)."""

    def __init__(self, window_s: float = 60.0, max_addresses: int = 10_000) -> None:
        self._window_s = window_s
        self._max = max_addresses
        self._seen: dict[str, deque[float]] = {}

    def count(self, address: str) -> int:
        """Count one more wrong token from `address`; how many it sent within the window."""
        now = time.monotonic()
        if len(self._seen) >= self._max and address not in self._seen:
            self._seen.pop(next(iter(self._seen)))
        times = self._seen.setdefault(address, deque())
        while times and times[0] <= now - self._window_s:
            times.popleft()
        times.append(now)
        return len(times)
