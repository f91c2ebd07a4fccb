"""`peitu serve`: the composition root of the server process."""

from __future__ import annotations

import logging
from typing import Any

import uvicorn
from fastapi import FastAPI

from config import Settings
from index.wiring import build_app
from server.app import create_app
from server.auth import is_loopback
from server.scheduler import ScheduleInvalid, schedule_triggers
from server.slow_clients import with_header_timeout

log = logging.getLogger(__name__)

EXIT_REFUSED = 2
_SHORT_TOKEN = 16


def refusal(settings: Settings) -> str | None:
    """Why the server must not start with these settings, in one line; None when it may."""
    host = settings.server.host
    token = settings.admin_token.get_secret_value() if settings.admin_token else ""
    if not token and not is_loopback(host):
        return (
            f"refusing to listen on {host} without an admin token: set PEITU_ADMIN_TOKEN, "
            "or listen on 127.0.0.1 (PEITU_SERVER__HOST)"
        )
    try:
        schedule_triggers(settings.indexing)
    except ScheduleInvalid as error:
        return str(error)
    return None


def run(settings: Settings) -> int:
    """Build PeiTu once and serve the HTTP API until interrupted; 2 when refused to start."""
    problem = refusal(settings)
    if problem is not None:
        log.error("peitu serve: %s", problem)
        return EXIT_REFUSED
    if settings.admin_token and len(settings.admin_token.get_secret_value()) < _SHORT_TOKEN:
        log.warning("PEITU_ADMIN_TOKEN is short; use at least %d random characters", _SHORT_TOKEN)
    app = build_app(settings)
    try:
        api = create_app(app, settings)
        server = uvicorn.Server(uvicorn_config(api, settings))
        log.info("PeiTu server on http://%s:%d", settings.server.host, settings.server.port)
        server.run()
        return 0 if server.started else 1
    finally:
        app.close()


def uvicorn_config(api: FastAPI, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """How `peitu serve` runs the app (tests run it so too, on a socket of their own)."""
    options: dict[str, Any] = {
        "host": settings.server.host,
        "port": settings.server.port,
        "http": with_header_timeout(settings.server.header_timeout_s),
        "log_level": settings.log_level.lower(),
        "access_log": settings.log_level == "DEBUG",
        "proxy_headers": False,  # the client address is the peer's, whatever a header claims
        "server_header": False,
    }
    return uvicorn.Config(api, **{**options, **overrides})
