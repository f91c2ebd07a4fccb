"""The python-wechaty adapter: connect to a puppet service, hand messages to `MessageHandler`.

The bot connects straight to the configured puppet service endpoint (a self-hosted gateway or
a paid protocol's service): never to wechaty's internet discovery service. It keeps the
connection up itself (instead of `Wechaty.start`, which sleeps a minute on a network error and
stops the whole event loop on a configuration error) and logs every loss and reconnect.
"""

from __future__ import annotations

from bot import wx_compat  # noqa: F401  # isort: skip  - must run before wechaty is imported
import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError
from wechaty import Contact, FileBox, Message, Wechaty, WechatyOptions
from wechaty_puppet import MessageType, PuppetOptions, WechatyPuppetError

from bot.errors import BotConfigError, ImageDownloadFailed
from bot.handler import MessageHandler, Outcome
from bot.photos import OutgoingPhoto, PhotoPreparer
from bot.ports import BotPairing, ChatPlatform, PhotoFinder
from bot.wx_media import download_image
from config.settings import MAX_PIXELS, ChatSettings, Settings, WechatSettings

log = logging.getLogger(__name__)

HandledHook = Callable[[str, Outcome], None]  # (message id, outcome), e.g. for tests
_FIRST_RETRY_S = 1.0
_MAX_RETRY_S = 60.0
_STOP_TIMEOUT_S = 5.0
_ENV_TOKENS = ("WECHATY_PUPPET_SERVICE_TOKEN", "TOKEN", "token")
# What a dropped or refused connection looks like from grpclib, sockets and wechaty.
_CONNECTION_ERRORS = (StreamTerminatedError, GRPCError, OSError, WechatyPuppetError)


def puppet_options(settings: WechatSettings) -> PuppetOptions:
    """A fresh `PuppetOptions` for the configured endpoint; raises `BotConfigError` if unusable."""
    endpoint = settings.endpoint.strip()
    if not endpoint:
        raise BotConfigError(
            "no puppet service endpoint configured: set PEITU_WECHAT__ENDPOINT=host:port "
            "(the wechaty puppet service gateway the bot connects to)"
        )
    _check_host_port(endpoint)
    token = settings.token.get_secret_value() if settings.token is not None else None
    if not token and (names := [n for n in _ENV_TOKENS if os.environ.get(n)]):
        log.warning("PEITU_WECHAT__TOKEN is not set: python-wechaty will send $%s", names[0])
    # Never reuse the default instance of WechatyOptions: it is shared by every bot.
    return PuppetOptions(end_point=endpoint, token=token)


def _retrieve_quietly(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("event stream ended: %r", task.exception())


async def _check_reachable(endpoint: str, timeout_s: float = 3.0) -> None:
    """Raise `OSError` unless a TCP connection to the endpoint opens in time.

    wechaty-puppet-service checks this itself with a blocking telnet call, which would stall
    every reply in progress; `wx_compat` turns that check off and this one runs instead."""
    host, _, port = endpoint.rpartition(":")
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host.strip("[]"), int(port)), timeout_s
        )
    except TimeoutError:
        raise OSError(f"no answer from {endpoint} within {timeout_s:g} s") from None
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def _check_host_port(endpoint: str) -> None:
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BotConfigError(
            f"PEITU_WECHAT__ENDPOINT must be host:port, got {endpoint!r} (e.g. 127.0.0.1:8788)"
        )


class WechatIncoming:
    """A wechaty `Message` as the handler sees it (`bot.handler.Incoming`)."""

    def __init__(self, msg: Message, *, text: str, room_topic: str | None, mentions_me: bool):
        self._msg = msg
        talker = msg.talker()
        room = msg.room()
        self.talker_id: str = talker.contact_id
        self.talker_name: str = talker.name
        self.room_id: str | None = room.room_id if room is not None else None
        self.room_topic = room_topic
        self.text = text
        self.is_image: bool = msg.type() == MessageType.MESSAGE_TYPE_IMAGE
        self.mentions_me = mentions_me

    @classmethod
    async def read(cls, msg: Message) -> WechatIncoming:
        """Gather what the handler needs; in rooms that takes calls to the puppet service."""
        room = msg.room()
        if room is None:
            return cls(msg, text=msg.text(), room_topic=None, mentions_me=False)
        topic = await room.topic()
        is_text = msg.type() == MessageType.MESSAGE_TYPE_TEXT
        mentions_me = is_text and await msg.mention_self()
        text = await msg.mention_text() if mentions_me else msg.text()
        return cls(msg, text=text, room_topic=topic, mentions_me=mentions_me)

    async def image_bytes(self) -> bytes:
        """The image of this message, downloaded from the puppet service."""
        try:
            return await download_image(self._msg.puppet.puppet_stub, self._msg.message_id)
        except _CONNECTION_ERRORS as error:
            raise ImageDownloadFailed(f"message {self._msg.message_id}: {error}") from error

    async def reply_text(self, text: str) -> None:
        """Send `text` to the chat the message came from."""
        await self._msg.say(text)

    async def reply_photo(self, photo: OutgoingPhoto) -> None:
        """Send the photo's file as an image message."""
        box = await asyncio.to_thread(FileBox.from_file, str(photo.path), photo.name)
        await self._msg.say(box)


class PeiTuBot(Wechaty):  # type: ignore[misc]  # wechaty is untyped
    """The WeChat bot: one `MessageHandler` behind a supervised puppet service connection."""

    def __init__(
        self,
        handler: MessageHandler,
        settings: WechatSettings,
        *,
        on_handled: HandledHook | None = None,
    ) -> None:
        self._scheduler = AsyncIOScheduler()  # in memory: wechaty's default is a SQLite file
        options = WechatyOptions(
            puppet="wechaty-puppet-service",
            puppet_options=puppet_options(settings),
            host="127.0.0.1",
            port=0,  # wechaty refuses to log in when its (unused) plugin port is taken
            scheduler=self._scheduler,
        )
        super().__init__(options)
        self.endpoint = settings.endpoint
        self.logged_in = asyncio.Event()
        self._keepalive_s = settings.keepalive_s
        self.handler = handler
        self._on_handled = on_handled
        self._stopping = False
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._closing = asyncio.Lock()  # shutdown() and the ending connection both close

    async def on_login(self, contact: Contact) -> None:
        """Wechaty hook: the puppet service logged the account in."""
        log.info("logged in to WeChat as %s via %s", contact.name, self.endpoint)
        self.logged_in.set()

    async def on_logout(self, contact: Contact) -> None:
        """Wechaty hook: the account was logged out (e.g. from the phone)."""
        log.warning("logged out of WeChat (%s)", contact.name)
        self.logged_in.clear()

    async def on_error(self, payload: Any) -> None:
        """Wechaty hook: the puppet service reported an error."""
        log.error("puppet service error: %s", payload)

    async def on_message(self, msg: Message) -> None:
        """Wechaty hook, one task per message: answer it, and never let an error escape."""
        task = asyncio.current_task()
        if self._stopping or task is None:
            return
        self._in_flight.add(task)
        try:
            await self._answer(msg)
        finally:
            self._in_flight.discard(task)

    async def _answer(self, msg: Message) -> None:
        outcome = Outcome.FAILED
        try:
            if msg.is_self():  # the bot's own replies come back as messages too
                outcome = Outcome.OWN_MESSAGE
            else:
                outcome = await self.handler.handle(await WechatIncoming.read(msg))
        except Exception:  # a broken connection or payload: log it, keep serving others
            log.exception("could not handle message %s", msg.message_id)
        if self._on_handled is not None:
            self._on_handled(msg.message_id, outcome)

    async def run_forever(self) -> None:
        """Stay connected until `shutdown()` or cancellation, reconnecting with back-off."""
        log.info("%s", await self.handler.access.describe())  # whom it serves; the pairing code
        delay = _FIRST_RETRY_S
        while not self._stopping:
            reason = await self._serve_one_connection()
            await self._close_puppet()
            if self._stopping:
                break
            if self.logged_in.is_set():
                delay = _FIRST_RETRY_S
            self.logged_in.clear()
            log.warning(
                "lost puppet service %s (%s); reconnecting in %.0f s", self.endpoint, reason, delay
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_RETRY_S)
            log.info("reconnecting to puppet service %s", self.endpoint)

    async def _serve_one_connection(self) -> str:
        """Connect and listen until the event stream ends; say why it ended.

        On cancellation the connection stays open: `shutdown()` lets replies in progress finish
        before it closes the connection.
        """
        try:
            await _check_reachable(self.endpoint)
            await self.init_puppet()
            await self.init_puppet_event_bridge(self.puppet)
            return await self._listen_while_alive()
        except GRPCError as error:
            if error.status in (Status.UNAUTHENTICATED, Status.PERMISSION_DENIED):
                raise BotConfigError(
                    f"puppet service {self.endpoint} refused the token ({error.status.name}): "
                    "check PEITU_WECHAT__TOKEN"
                ) from error
            return f"{error.status.name}: {error.message}"
        except _CONNECTION_ERRORS as error:
            return f"{type(error).__name__}: {error}"

    async def _listen_while_alive(self) -> str:
        """Listen until the event stream ends or the gateway stops answering keep-alive pings."""
        stream = asyncio.create_task(self.puppet.start())  # returns when the event stream ends
        # Cancelled from outside (shutdown), this coroutine leaves the stream to end when the
        # connection closes; its error then is expected and must not be logged as unretrieved.
        stream.add_done_callback(_retrieve_quietly)
        if self._keepalive_s <= 0:
            await stream
            return "event stream ended"
        watchdog = asyncio.create_task(self._keep_alive())
        try:
            await asyncio.wait({stream, watchdog}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watchdog.cancel()
        if not stream.done():  # the watchdog gave up: the connection is dead, stop listening
            stream.cancel()
            with contextlib.suppress(asyncio.CancelledError, *_CONNECTION_ERRORS):
                await stream
            return watchdog.result()
        stream.result()  # raises what ended the stream, for the caller to sort
        return "event stream ended"

    async def _keep_alive(self) -> str:
        """Ping the gateway every `keepalive_s`; return why once it fails to answer in time."""
        while True:
            await asyncio.sleep(self._keepalive_s)
            try:
                await asyncio.wait_for(self.puppet.ding("peitu-keepalive"), self._keepalive_s)
            except TimeoutError:
                return f"no answer to a keep-alive ping within {self._keepalive_s:g} s"
            except _CONNECTION_ERRORS as error:
                return f"keep-alive ping failed: {type(error).__name__}: {error}"

    async def _close_puppet(self) -> None:
        async with self._closing:
            puppet = self._puppet
            if puppet is not None:
                # A gateway that stopped answering would leave stop() waiting for ever.
                with contextlib.suppress(TimeoutError, *_CONNECTION_ERRORS):
                    await asyncio.wait_for(puppet.stop(), _STOP_TIMEOUT_S)
            # wechaty starts its scheduler on every login; the login fails if it already runs.
            if self._scheduler.running:
                self._scheduler.shutdown(wait=False)
                await asyncio.sleep(0)  # AsyncIOScheduler stops in a loop callback: let it run

    async def shutdown(self, grace_s: float = 5.0) -> None:
        """Stop serving: let replies in progress finish (up to `grace_s`), then disconnect."""
        self._stopping = True
        pending = {task for task in self._in_flight if not task.done()}
        if pending:
            log.info("waiting up to %.0f s for %d replies in progress", grace_s, len(pending))
            _, unfinished = await asyncio.wait(pending, timeout=grace_s)
            for task in unfinished:
                task.cancel()
        await self._close_puppet()
        log.info("bot stopped")


def create_bot(
    finder: PhotoFinder,
    settings: WechatSettings,
    cache_dir: Path,
    *,
    chat: ChatSettings | None = None,
    on_handled: HandledHook | None = None,
    max_pixels: int = MAX_PIXELS,
    pairing: BotPairing | None = None,
) -> PeiTuBot:
    """Compose the bot: handler (`chat`: the chat core's rules, a private bot by default),
    photo preparation (copies go to `cache_dir`; a photo over `max_pixels`, the indexing limit,
    is refused as it is by the scan), who it serves (`pairing`: the people paired with it, see
    `bot.access`), connection."""
    photos = PhotoPreparer(cache_dir, settings.max_image_bytes, max_pixels=max_pixels)
    handler = MessageHandler(finder, chat or ChatSettings(), photos, pairing=pairing)
    return PeiTuBot(handler, settings, on_handled=on_handled)


async def run_bot(
    app: PhotoFinder,
    settings: WechatSettings,
    *,
    chat: ChatSettings | None = None,
    max_pixels: int = MAX_PIXELS,
    pairing: BotPairing | None = None,
) -> None:
    """Serve WeChat until cancelled. Raises `BotConfigError` for unusable settings."""
    with tempfile.TemporaryDirectory(prefix="peitu-bot-") as cache_dir:
        bot = create_bot(
            app, settings, Path(cache_dir), chat=chat, max_pixels=max_pixels, pairing=pairing
        )
        try:
            await bot.run_forever()
        finally:
            await bot.shutdown()


def _check(settings: Settings) -> None:
    puppet_options(settings.wechat)


async def _serve(
    finder: PhotoFinder, settings: Settings, *, max_pixels: int, pairing: BotPairing | None
) -> None:
    await run_bot(
        finder, settings.wechat, chat=settings.chat, max_pixels=max_pixels, pairing=pairing
    )


PLATFORM = ChatPlatform(check=_check, serve=_serve)
