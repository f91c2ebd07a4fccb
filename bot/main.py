"""`peitu bot`: the bot process's composition root.

The messenger is chosen by name (`PEITU_CHAT__PLATFORM`) from `PLATFORMS`: a new one is its
adapter module (like `bot/wechat.py`), its settings class in `config/settings.py` and one line
here; the chat core (`bot.handler`, `bot.access`, `bot.guards`) stays as it is."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from bot import wechat
from bot.errors import BotConfigError
from bot.ports import BotPairing, ChatPlatform, PhotoFinder
from bot.server_client import ServerFinder, ServerRefused, ServerUnavailable
from config import Settings
from index.errors import PeiTuError

if TYPE_CHECKING:
    from index.service import PeiTu

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_REFUSED = 2  # the settings cannot work; the log says which one and why
WARM_UP_WAIT_S = 15.0  # how long a stop waits for the warm-up's model load to end

PLATFORMS: dict[str, ChatPlatform] = {  # the messengers `peitu bot` can serve, by name
    "wechat": wechat.PLATFORM,
}


def platform_named(name: str) -> ChatPlatform:
    """The adapter of the messenger `name`; raises `BotConfigError` for one PeiTu lacks."""
    try:
        return PLATFORMS[name]
    except KeyError:
        known = ", ".join(sorted(PLATFORMS))
        raise BotConfigError(
            f"PEITU_CHAT__PLATFORM={name!r} is not a messenger PeiTu can serve (one of: {known})"
        ) from None


def run(settings: Settings) -> int:
    """Build PeiTu once and serve the chosen messenger until SIGINT/SIGTERM. Returns the
    exit code."""
    try:
        platform = platform_named(settings.chat.platform)
        platform.check(settings)  # refuse bad settings before loading any model
    except BotConfigError as error:
        log.error("peitu bot: %s", error)
        return EXIT_REFUSED
    finder, pairing, close = build_finder(settings)
    try:
        _log_index_status(finder)
        limit = settings.indexing.max_pixels  # the bot's photo copies keep the scan's limit
        return asyncio.run(
            serve_until_stopped(platform.serve(finder, settings, max_pixels=limit, pairing=pairing))
        )
    except ServerRefused as error:
        log.error("peitu bot: %s", error)
        return EXIT_REFUSED
    finally:
        close()


def build_finder(settings: Settings) -> tuple[PhotoFinder, BotPairing, Callable[[], None]]:
    """The bot's finder, who is paired with it, and how to close them: the PeiTu server at
    `bot.server_url` (its data folder keeps the pairing), or the core itself (the index
    opened and the model loaded in this process, the pairing in its data folder)."""
    url = settings.bot.server_url
    if url:
        token = settings.bot.server_token or settings.admin_token
        server = ServerFinder(
            url, token.get_secret_value() if token else None, timeout_s=settings.bot.timeout_s
        )
        log.info("peitu bot: asks the PeiTu server at %s (no index or model of its own)", url)
        return server, server, server.close
    # Imported here: the core brings Chroma and PyTorch, which a bot asking a server never needs.
    from index.wiring import build_app

    app = build_app(settings)
    warming = threading.Thread(target=_warm_up, args=(app,), name="warm-up", daemon=True)
    warming.start()

    def close() -> None:
        # a model half loaded is not torn down under the warm-up (onnxruntime aborts the
        # process when its session is freed, or the interpreter ends, in the middle of a load)
        warming.join(timeout=WARM_UP_WAIT_S)
        app.close()

    return app, app.bot_access, close


def _warm_up(app: PeiTu) -> None:
    """Load the models and run one query off the message path, so the first person to ask
    does not wait for them (the bot answers meanwhile; a question waits on the same loads)."""
    try:
        app.warm_up()
    except (PeiTuError, OSError) as error:
        log.error("peitu bot: the models could not be loaded: %s", error)


async def serve_until_stopped(serving: Coroutine[Any, Any, None]) -> int:
    """Run the bot (a platform's `serve`); SIGINT or SIGTERM stop it cleanly (exit code 0)."""
    task = asyncio.create_task(serving)
    loop = asyncio.get_running_loop()
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(stop_signal, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        log.info("peitu bot: stopped")
    except BotConfigError as error:
        log.error("peitu bot: %s", error)
        return EXIT_REFUSED
    finally:
        for stop_signal in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(stop_signal)
    return EXIT_OK


def _log_index_status(finder: PhotoFinder) -> None:
    """Say at start-up what the bot can offer; a server not up yet is only a warning."""
    try:
        status = finder.status()
    except ServerRefused:
        raise
    except ServerUnavailable as error:
        log.warning("the PeiTu server does not answer yet (%s): replies wait for it", error)
        return
    if status.problem:
        log.warning("index problem: %s", status.problem)
    if status.photos == 0:
        log.warning("the index is empty: run `peitu index` so the bot has photos to offer")
    else:
        log.info("serving %d indexed photos", status.photos)
