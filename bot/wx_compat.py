"""Make python-wechaty 0.10.7 importable on Python 3.11/3.12 with current pyee and urllib3.

Import this module before anything from `wechaty`, `wechaty_puppet` or `wechaty_puppet_service`
(`bot.wechat` does). It patches, idempotently:
- pyee >= 12 dropped the top-level `pyee.AsyncIOEventEmitter` alias wechaty imports;
- urllib3 2.x removed `urllib3.get_host`, which wechaty imports but does not need to work well;
- Python >= 3.11 dataclasses refuse the unhashable `PuppetOptions()` default of
  `WechatyOptions.puppet_options`. Making it hashable lets wechaty import, but that default
  instance is then SHARED by every `WechatyOptions`: always pass a fresh `PuppetOptions`.

Two environment defaults, each only when not set already:
- `CACHE_DIR`: wechaty creates its cache folder when imported; use the user's cache folder
  instead of `./.wechaty` in whatever directory the bot started in.
- `WECHATY_LOG=warn`: wechaty's loggers have their own stderr handlers (our logging settings do
  not reach them) and at "info" they log every message's text. Set `WECHATY_LOG=info` to debug.

And it filters wechaty's loggers: known noise is dropped and tokens are masked.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pyee
import urllib3


def _default_cache_dir() -> str:
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(cache_home) / "peitu" / "wechaty")


def _get_host(url: str) -> tuple[str, str | None, int | None]:
    parsed = urllib3.util.parse_url(url)
    return parsed.scheme or "http", parsed.host, parsed.port


# Warnings wechaty logs on every run or every image, which say nothing to a bot operator.
_NOISE: dict[str, tuple[str, ...]] = {
    "PuppetService": ("there are endpoint<",),  # we always give both endpoint and token
    "wechaty.plugin": ("there is not registed blueprint",),  # no plugin web server: intended
    "FileBox": ("mimeType will be deprecated",),  # logged three times per image sent
    "Accessory": ("set payload more than once",),
}


class _QuietWechaty(logging.Filter):
    """Drops wechaty's known noise and never lets a token reach the log (`<***>` instead)."""

    _ANGLED = re.compile(r"<[^<>]*>")

    def __init__(self, noise: tuple[str, ...]) -> None:
        super().__init__()
        self._noise = noise

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if message.startswith(self._noise):
            return False
        if "token" in message:  # wechaty-puppet-service logs tokens in clear
            record.msg = self._ANGLED.sub("<***>", message)
        return True


def _reachable_checked_elsewhere(end_point: str) -> bool:
    return True


def _patch() -> None:
    os.environ.setdefault("CACHE_DIR", _default_cache_dir())
    os.environ.setdefault("WECHATY_LOG", "warn")
    for name, noise in _NOISE.items():
        logging.getLogger(name).addFilter(_QuietWechaty(noise))
    if not hasattr(pyee, "AsyncIOEventEmitter"):
        from pyee.asyncio import AsyncIOEventEmitter

        pyee.AsyncIOEventEmitter = AsyncIOEventEmitter  # type: ignore[attr-defined]
    if not hasattr(urllib3, "get_host"):
        urllib3.get_host = _get_host  # type: ignore[attr-defined]
    import wechaty_puppet.schemas.puppet as puppet_schema
    import wechaty_puppet_service.puppet as puppet_service

    # Its blocking telnet reachability check would stall the event loop on every (re)connect:
    # bot.wechat checks the endpoint asynchronously before each connection instead.
    puppet_service.ping_endpoint = _reachable_checked_elsewhere  # type: ignore[attr-defined]

    puppet_schema.PuppetOptions.__hash__ = object.__hash__


_patch()
