"""`MessageHandler` with a stand-in message: the paths a gateway cannot easily produce."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bot.commands import IMAGE_GONE
from bot.errors import ImageDownloadFailed
from bot.handler import MessageHandler, Outcome
from bot.photos import OutgoingPhoto, PhotoPreparer
from config.settings import ChatSettings
from tests.wechat.fakes import FakeFinder

PNG = b"\x89PNG\r\n\x1a\n fake image bytes"


@dataclass
class FakeMessage:
    text: str = ""
    talker_id: str = "wxid_alice"
    talker_name: str = "Alice"
    room_id: str | None = None
    room_topic: str | None = None
    is_image: bool = False
    mentions_me: bool = False
    image: bytes | None = PNG
    said: list[str] = field(default_factory=list)
    photos: list[OutgoingPhoto] = field(default_factory=list)

    async def image_bytes(self) -> bytes:
        if self.image is None:
            raise ImageDownloadFailed("expired on the server")
        return self.image

    async def reply_text(self, text: str) -> None:
        self.said.append(text)

    async def reply_photo(self, photo: OutgoingPhoto) -> None:
        self.photos.append(photo)


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def make_handler(tmp_path: Path, finder: FakeFinder, clock: Clock | None = None) -> MessageHandler:
    photos = PhotoPreparer(tmp_path / "cache", 100_000)
    settings = ChatSettings(allow_everyone=True)  # who is served: tests/wechat/test_pairing.py
    return MessageHandler(finder, settings, photos, clock=clock or Clock())


def handle(handler: MessageHandler, msg: FakeMessage) -> Outcome:
    return asyncio.run(handler.handle(msg))


def test_similar_uses_the_last_image_of_that_person_in_that_chat(tmp_path: Path) -> None:
    finder = FakeFinder()
    handler = make_handler(tmp_path, finder)
    assert handle(handler, FakeMessage(is_image=True, image=b"first")) is Outcome.IMAGE_KEPT
    assert handle(handler, FakeMessage(is_image=True, image=b"second")) is Outcome.IMAGE_KEPT
    room_image = FakeMessage(is_image=True, image=b"in the room", room_id="r@chatroom")
    assert handle(handler, room_image) is Outcome.IMAGE_KEPT
    assert (
        handle(handler, FakeMessage(is_image=True, talker_id="wxid_bob", image=b"bob's"))
        is Outcome.IMAGE_KEPT
    )
    assert handle(handler, FakeMessage("/相似")) is Outcome.REPLIED
    assert finder.images == [b"second"]


def test_a_photo_gets_one_hint_per_chat_while_it_is_kept(tmp_path: Path) -> None:
    clock = Clock()
    handler = make_handler(tmp_path, FakeFinder(), clock)
    first, second = FakeMessage(is_image=True), FakeMessage(is_image=True)
    assert handle(handler, first) is Outcome.IMAGE_KEPT
    assert handle(handler, second) is Outcome.IMAGE_KEPT
    assert first.said == ["收到图片。发 /相似 找相册里和它相似的照片。"] and second.said == []
    in_room = FakeMessage(is_image=True, room_id="r@chatroom")
    handle(handler, in_room)
    assert in_room.said == []  # in a group the photo is for the others
    clock.now += 301
    later = FakeMessage(is_image=True)
    handle(handler, later)
    assert later.said == first.said


def test_the_last_image_is_forgotten_after_five_minutes(tmp_path: Path) -> None:
    clock = Clock()
    finder = FakeFinder()
    handler = make_handler(tmp_path, finder, clock)
    handle(handler, FakeMessage(is_image=True))
    clock.now += 301
    msg = FakeMessage("/相似")
    assert handle(handler, msg) is Outcome.REPLIED
    assert msg.said == ["请先发一张图片，再在 5 分钟内发送 /相似。"] and finder.images == []


def test_an_image_the_server_no_longer_has_is_asked_for_again(tmp_path: Path) -> None:
    handler = make_handler(tmp_path, FakeFinder())
    handle(handler, FakeMessage(is_image=True, image=None))
    msg = FakeMessage("/相似")
    handle(handler, msg)
    assert msg.said == [IMAGE_GONE]


def test_mention_without_a_command_shows_help_but_private_chat_is_left_alone(
    tmp_path: Path,
) -> None:
    handler = make_handler(tmp_path, FakeFinder())
    in_room = FakeMessage("你好", room_id="r@chatroom", mentions_me=True)
    assert handle(handler, in_room) is Outcome.REPLIED and "/配图" in in_room.said[0]
    private = FakeMessage("你好")
    assert handle(handler, private) is Outcome.IGNORED and private.said == []


def test_images_from_people_not_allowed_are_not_kept(tmp_path: Path) -> None:
    settings = ChatSettings(allow_contacts=["Alice"])
    handler = MessageHandler(FakeFinder(), settings, PhotoPreparer(tmp_path, 100_000))
    stranger = FakeMessage(is_image=True, talker_id="wxid_eve", talker_name="Eve")
    assert handle(handler, stranger) is Outcome.NOT_ALLOWED


def test_a_refused_command_is_logged_with_the_ids_to_list(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.handler")
    settings = ChatSettings(allow_contacts=["wxid_alice"], allow_names=False)
    handler = MessageHandler(FakeFinder(), settings, PhotoPreparer(tmp_path, 100_000))
    impostor = FakeMessage("/配图 海边", talker_id="wxid_eve", talker_name="wxid_alice")
    chatter = FakeMessage("今天好热", talker_id="wxid_eve", room_id="r@chatroom", room_topic="家")
    assert handle(handler, impostor) is Outcome.NOT_ALLOWED
    assert len(impostor.said) == 1 and "私人的" in impostor.said[0]  # one polite line
    assert handle(handler, chatter) is Outcome.NOT_ALLOWED and chatter.said == []
    refused = [r.getMessage() for r in caplog.records if "not on the allow-list" in r.getMessage()]
    assert refused == [
        "refused a command from 'wxid_alice' (id wxid_eve): not paired and not on the "
        "allow-list (PEITU_CHAT__ALLOW_CONTACTS / __ALLOW_ROOMS)"
    ]
    assert handle(handler, FakeMessage("/帮助")) is Outcome.REPLIED
