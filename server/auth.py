"""Bearer-token auth for `/api/*`, and the loopback rule for a server without a token."""

from __future__ import annotations

import hmac
import ipaddress
import logging
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

log = logging.getLogger(__name__)

_bearer = HTTPBearer(auto_error=False, description="the PEITU_ADMIN_TOKEN of the server")
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


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


def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Dependency of every `/api` route: the admin token, or a loopback client when none is set."""
    expected: str | None = request.app.state.ctx.admin_token
    if expected is None:
        client = request.client.host if request.client else ""
        if not is_loopback(client):  # main.run refuses this setup; this is the second line
            raise _unauthorized("no admin token is configured: /api answers loopback clients only")
        return
    if credentials is None:
        raise _unauthorized(
            "missing bearer token: send 'Authorization: Bearer <PEITU_ADMIN_TOKEN>'"
        )
    if not token_matches(credentials.credentials, expected):
        log.warning("wrong admin token from %s", request.client.host if request.client else "?")
        raise _unauthorized("wrong admin token")
