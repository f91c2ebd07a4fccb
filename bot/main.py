"""`peitu bot`: the bot process's composition root."""

from __future__ import annotations

import asyncio
import logging
import signal

from bot.errors import BotConfigError
from bot.ports import PhotoFinder
from bot.wechat import puppet_options, run_bot
from config import Settings
from config.settings import WechatSettings
from index.app import build_app

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_REFUSED = 2  # the settings cannot work; the log says which one and why


def run(settings: Settings) -> int:
    """Build PeiTu once and serve WeChat until SIGINT/SIGTERM. Returns the exit code."""
    try:
        puppet_options(settings.wechat)  # refuse bad settings before loading any model
    except BotConfigError as error:
        log.error("peitu bot: %s", error)
        return EXIT_REFUSED
    app = build_app(settings)
    try:
        _log_index_status(app)
        return asyncio.run(serve_until_stopped(app, settings.wechat))
    finally:
        app.close()


async def serve_until_stopped(app: PhotoFinder, settings: WechatSettings) -> int:
    """Run the bot; SIGINT or SIGTERM stop it cleanly (exit code 0)."""
    task = asyncio.create_task(run_bot(app, settings))
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


def _log_index_status(app: PhotoFinder) -> None:
    status = app.status()
    if status.problem:
        log.warning("index problem: %s", status.problem)
    if status.photos == 0:
        log.warning("the index is empty: run `peitu index` so the bot has photos to offer")
    else:
        log.info("serving %d indexed photos", status.photos)
