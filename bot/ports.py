"""What the bot needs from the core, as `Protocol`s, so a fake can stand in for unit tests."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from config.settings import Settings
from index.library.pairing import Pairing
from index.models import RecommendResult


class IndexStatusView(Protocol):
    """The parts of the core's `IndexStatus` the bot reports."""

    @property
    def photos(self) -> int: ...

    @property
    def last_index_at(self) -> datetime | None: ...

    @property
    def indexing(self) -> bool: ...

    @property
    def problem(self) -> str | None: ...


class PhotoFinder(Protocol):
    """The core facade as the bot uses it. Every method blocks: call it in a thread."""

    def recommend(
        self, text: str, top_k: int | None = None, *, rerank: bool = True
    ) -> RecommendResult:
        """Photos for `text`; raises `InvalidQuery` for empty text."""
        ...

    def similar_to_image(self, data: bytes, top_k: int | None = None) -> RecommendResult:
        """Photos that look like the image (visual index); raises `PhotoUnreadable`, or
        `IndexBusy` / `IndexMismatch` while the visual index is being filled or rebuilt
        (`DescribeFailed` with the visual index off)."""
        ...

    def status(self) -> IndexStatusView:
        """How many photos are findable, when the last index run ended, whether one runs."""
        ...

    def photo_path(self, photo_id: str) -> Path | None:
        """Absolute path of the photo's file, or None when it left the library."""
        ...


class BotPairing(Protocol):
    """Who the bot serves besides its allow-list: the people who sent the pairing code
    (`index.library.pairing.BotAccess` in this process, or the server's over HTTP). Every
    method blocks: call it in a thread."""

    def code(self) -> str:
        """The code that lets the next person in."""
        ...

    def paired_ids(self) -> frozenset[str]:
        """The contact ids let in."""
        ...

    def pair(self, code: str, contact_id: str, name: str) -> Pairing:
        """Let the contact in when `code` is the code."""
        ...

    def replace_code(self, why: str) -> str:
        """Make a new code now (the old one was seen by others); the new one."""
        ...


class ServeChat(Protocol):
    """Serve a messenger until cancelled; raises `BotConfigError` for settings it cannot use."""

    def __call__(
        self,
        finder: PhotoFinder,
        settings: Settings,
        *,
        max_pixels: int,
        pairing: BotPairing | None,
    ) -> Coroutine[Any, Any, None]: ...


@dataclass(frozen=True)
class ChatPlatform:
    """A messenger's adapter as `peitu bot` runs it (`bot.main.PLATFORMS`, chosen by
    `PEITU_CHAT__PLATFORM`). The adapter reads its own settings (`settings.wechat`) and hands
    every message to `bot.handler.MessageHandler` built with `settings.chat`."""

    check: Callable[[Settings], None]  # raises `BotConfigError` before any model loads
    serve: ServeChat
