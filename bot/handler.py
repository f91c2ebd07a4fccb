"""What the bot does with one incoming message. No messenger's types: its adapter (`bot.wechat`)
adapts them.

Every command ends in a reply; every failure becomes a polite reply, never silence. Core calls
block (embedding, Chroma, the LLM), so they run in threads and one slow request never holds up
the others.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Protocol

from bot import commands
from bot.access import Access
from bot.commands import Command, Kind
from bot.errors import ImageDownloadFailed
from bot.guards import EVERYONE, Clock, RateLimiter, RecentItems, strip_controls
from bot.photos import OutgoingPhoto, PhotoPreparer
from bot.ports import BotPairing, PhotoFinder
from config.settings import ChatSettings
from index.errors import PeiTuError, PhotoUnreadable
from index.models import Recommendation, RecommendResult, RerankState

log = logging.getLogger(__name__)

RECENT_IMAGE_MINUTES = 5
ImageLoader = Callable[[], Awaitable[bytes]]


class Incoming(Protocol):
    """One received message and a way to answer in the same chat."""

    @property
    def talker_id(self) -> str: ...
    @property
    def talker_name(self) -> str: ...
    @property
    def room_id(self) -> str | None: ...  # None in a 1:1 chat
    @property
    def room_topic(self) -> str | None: ...
    @property
    def text(self) -> str: ...  # for text messages; @-mentions may still be in it
    @property
    def is_image(self) -> bool: ...
    @property
    def mentions_me(self) -> bool: ...

    async def image_bytes(self) -> bytes:
        """Download the image of an image message."""
        ...

    async def reply_text(self, text: str) -> None:
        """Send text to the chat the message came from."""
        ...

    async def reply_photo(self, photo: OutgoingPhoto) -> None:
        """Send an image file to the chat the message came from."""
        ...


class Outcome(StrEnum):
    IGNORED = "ignored"  # not a command, or a room message without the needed @-mention
    OWN_MESSAGE = "own_message"  # sent by the bot's account itself: never answered
    NOT_ALLOWED = "not_allowed"
    IMAGE_KEPT = "image_kept"  # remembered for a later /相似
    REPLIED = "replied"
    RATE_LIMITED = "rate_limited"
    FAILED = "failed"  # answered with an apology


class MessageHandler:
    """Turns incoming messages into replies using the core (`PhotoFinder`)."""

    def __init__(
        self,
        finder: PhotoFinder,
        settings: ChatSettings,
        photos: PhotoPreparer,
        *,
        pairing: BotPairing | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        """`pairing`: the people paired with the bot (None: the allow-list alone decides)."""
        self._finder = finder
        self._settings = settings
        self._photos = photos
        self._prefix = settings.command_prefix
        self.access = Access(settings, pairing, clock=clock)
        self._limiter = RateLimiter(settings.rate_limit_per_minute, clock)
        self._everyone = RateLimiter(settings.rate_limit_global_per_minute, clock)
        self._images: RecentItems[ImageLoader] = RecentItems(RECENT_IMAGE_MINUTES * 60, clock)
        self._hinted: RecentItems[bool] = RecentItems(RECENT_IMAGE_MINUTES * 60, clock)

    async def handle(self, msg: Incoming) -> Outcome:
        """Answer `msg` if it is a command for the bot; say what happened."""
        command = None if msg.is_image else self._command_in(msg)
        pairing = command is not None and command.kind is Kind.PAIR  # strangers may pair
        if not pairing and not await self._allowed(msg):
            if command is not None:
                await self._refuse(msg)
            return Outcome.NOT_ALLOWED
        if msg.is_image:
            self._images.put(_chat_key(msg), msg.image_bytes)
            await self._hint_similar(msg)
            return Outcome.IMAGE_KEPT
        if command is None:
            return Outcome.IGNORED
        started = time.perf_counter()
        outcome = await self._answer(msg, command)
        where = _where(msg)
        elapsed_ms = (time.perf_counter() - started) * 1000
        log.info(
            "%s from %s%s: %s in %.0f ms", command.kind, msg.talker_name, where, outcome, elapsed_ms
        )
        return outcome

    async def _hint_similar(self, msg: Incoming) -> None:
        """Tell a person who sent a photo what the bot can do with it: in a 1:1 chat only (in a
        group photos are for the others), once while the photo is kept (a burst of nine photos
        gets one line)."""
        key = _chat_key(msg)
        if msg.room_id is not None or self._hinted.get(key):
            return
        self._hinted.put(key, True)
        await msg.reply_text(commands.photo_hint_text(self._prefix))

    async def _answer(self, msg: Incoming, command: Command) -> Outcome:
        try:
            return await self._run(msg, command)
        except PeiTuError as error:
            log.warning("%s failed for %s: %s", command.kind, msg.talker_id, error)
            await msg.reply_text(commands.error_text(error))
        except Exception:  # a person must get an answer, whatever broke underneath
            log.exception("%s failed for %s", command.kind, msg.talker_id)
            await msg.reply_text(commands.SORRY)
        return Outcome.FAILED

    async def _allowed(self, msg: Incoming) -> bool:
        return await self.access.allows(msg.talker_id, msg.talker_name, msg.room_id, msg.room_topic)

    async def _refuse(self, msg: Incoming) -> None:
        """A command from someone the bot does not serve: logged by id, told once, politely."""
        _log_refused(msg)
        if self.access.first_refusal(msg.talker_id):
            await msg.reply_text(self.access.stranger_text())

    def _command_in(self, msg: Incoming) -> Command | None:
        in_room = msg.room_id is not None
        if in_room and self._settings.group_requires_mention and not msg.mentions_me:
            return None
        text = strip_controls(msg.text)
        command = commands.parse_command(text, self._prefix, self._settings.max_text_chars)
        if command is None and in_room and msg.mentions_me:
            return Command(Kind.HELP)  # "@bot hello": show what the bot can do
        return command

    async def _run(self, msg: Incoming, command: Command) -> Outcome:
        """Every command that answers counts against the limits, help and usage included."""
        if not await self._within_rate_limit(msg):
            return Outcome.RATE_LIMITED
        if command.kind is Kind.HELP:
            await msg.reply_text(commands.help_text(self._prefix))
        elif command.kind is Kind.UNKNOWN:
            await msg.reply_text(commands.unknown_command_text(command.name, self._prefix))
        elif command.kind is Kind.STATUS:
            status = await asyncio.to_thread(self._finder.status)
            await msg.reply_text(commands.status_text(status))
        elif command.kind is Kind.PAIR:
            in_room = msg.room_id is not None
            reply = await self.access.pair(command.text, msg.talker_id, msg.talker_name, in_room)
            await msg.reply_text(reply)
        elif command.kind is Kind.PEITU and not command.text:
            await msg.reply_text(commands.usage_text(self._prefix))
        elif command.kind is Kind.PEITU:
            await self._recommend(msg, command)
        else:
            await self._similar(msg)
        return Outcome.REPLIED

    async def _within_rate_limit(self, msg: Incoming) -> bool:
        """The person's own limit, then the one all people share; one notice per refusal run."""
        for limiter, key in ((self._limiter, msg.talker_id), (self._everyone, EVERYONE)):
            decision = limiter.check(key)
            if decision.allowed:
                continue
            if decision.notify:
                per_minute = limiter.per_minute
                await msg.reply_text(commands.rate_limited_text(decision.retry_after_s, per_minute))
            log.info(
                "rate limit (%s): %s refused for %.0f s",
                "everyone" if key == EVERYONE else "person",
                msg.talker_id,
                decision.retry_after_s,
            )
            return False
        return True

    async def _recommend(self, msg: Incoming, command: Command) -> None:
        result = await asyncio.to_thread(self._finder.recommend, command.text)
        if result.rerank.state is RerankState.FAILED:
            log.info("answer not reranked: %s", result.rerank.reason)
        trimmed_to = self._settings.max_text_chars if command.trimmed else None
        await self._send(msg, result, similar=False, trimmed_to=trimmed_to)

    async def _similar(self, msg: Incoming) -> None:
        load_image = self._images.get(_chat_key(msg))
        if load_image is None:
            text = commands.no_recent_image_text(self._prefix, RECENT_IMAGE_MINUTES)
            await msg.reply_text(text)
            return
        try:
            data = await load_image()
        except ImageDownloadFailed as error:
            log.warning("image of %s unavailable: %s", msg.talker_id, error)
            await msg.reply_text(commands.IMAGE_GONE)
            return
        result = await asyncio.to_thread(self._finder.similar_to_image, data)
        await self._send(msg, result, similar=True)

    async def _send(
        self,
        msg: Incoming,
        result: RecommendResult,
        *,
        similar: bool,
        trimmed_to: int | None = None,
    ) -> None:
        """One text message, then the photos as images in the same order."""
        ready = await asyncio.to_thread(self._sendable, result.results)
        shown = dataclasses.replace(result, results=[rec for rec, _ in ready])
        text = commands.recommend_text(
            shown, similar=similar, trimmed_to=trimmed_to, prefix=self._prefix
        )
        await msg.reply_text(text)
        for _, photo in ready:
            await msg.reply_photo(photo)

    def _sendable(
        self, recommendations: list[Recommendation]
    ) -> list[tuple[Recommendation, OutgoingPhoto]]:
        """The recommendations whose file can still be read, each with the file to send."""
        ready = []
        for rec in recommendations:
            path = self._finder.photo_path(rec.photo_id)
            if path is None:
                log.warning("photo %s (%s) is no longer in the library", rec.photo_id, rec.path)
                continue
            try:
                ready.append((rec, self._photos.prepare(path)))
            except PhotoUnreadable as error:
                log.warning("cannot send %s: %s", path, error)
        return ready


def _chat_key(msg: Incoming) -> str:
    """Images are remembered per person per chat: an image in a room is not for a 1:1 /相似."""
    return f"{msg.room_id or ''}/{msg.talker_id}"


def _log_refused(msg: Incoming) -> None:
    """A command from someone the bot does not serve: say who, by id, so they can be listed."""
    log.info(
        "refused a command from %r (id %s)%s: not paired and not on the allow-list "
        "(PEITU_CHAT__ALLOW_CONTACTS / __ALLOW_ROOMS)",
        msg.talker_name,
        msg.talker_id,
        _where(msg),
    )


def _where(msg: Incoming) -> str:
    """Where a message came from, for the log: the room's topic and id, or nothing (1:1)."""
    return f" in room {msg.room_topic!r} (id {msg.room_id})" if msg.room_id else ""
