"""Every command that answers is rate-limited, per person and for everyone; control characters
never reach a reply. 50 of each command in 5 s (a stepped clock) from one person, then from
many people."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.guards import strip_controls
from bot.handler import MessageHandler, Outcome
from bot.photos import PhotoPreparer
from config.settings import ChatSettings
from tests.wechat.fakes import FakeFinder
from tests.wechat.test_handler import Clock, FakeMessage

COMMANDS = ["/foo", "/帮助", "/状态", "/配图", "/配图 海边", "/相似", "@bot 你好"]
PER_PERSON = 6
EVERYONE = 10


def handler_for(tmp_path: Path, clock: Clock) -> MessageHandler:
    settings = ChatSettings(
        rate_limit_per_minute=PER_PERSON, rate_limit_global_per_minute=EVERYONE, allow_everyone=True
    )
    return MessageHandler(FakeFinder(), settings, PhotoPreparer(tmp_path, 100_000), clock=clock)


def message(text: str, talker: str = "wxid_alice") -> FakeMessage:
    in_room = text.startswith("@")
    return FakeMessage(
        text,
        talker_id=talker,
        room_id="r@chatroom" if in_room else None,
        mentions_me=in_room,
    )


def burst(handler: MessageHandler, clock: Clock, texts: list[str]) -> list[FakeMessage]:
    """Send the messages 0.1 s apart (50 in 5 s); the messages, with what each was told."""
    sent = []
    for text_and_talker in texts:
        text, _, talker = text_and_talker.partition("|")
        msg = message(text, talker or "wxid_alice")
        asyncio.run(handler.handle(msg))
        sent.append(msg)
        clock.now += 0.1
    return sent


@pytest.mark.parametrize("command", COMMANDS)
def test_fifty_of_one_command_from_one_person_get_the_limit_and_one_notice(
    tmp_path: Path, command: str
) -> None:
    clock = Clock()
    sent = burst(handler_for(tmp_path, clock), clock, [command] * 50)
    answered = [m for m in sent if m.said and "请求太频繁" not in m.said[0]]
    notices = [m for m in sent if m.said and "请求太频繁" in m.said[0]]
    assert len(answered) == PER_PERSON
    assert len(notices) == 1
    assert sum(len(m.said) for m in sent) == PER_PERSON + 1


def test_fifty_people_together_get_the_global_limit(tmp_path: Path) -> None:
    clock = Clock()
    texts = [f"/帮助|wxid_{n}" for n in range(50)]
    sent = burst(handler_for(tmp_path, clock), clock, texts)
    answered = [m for m in sent if m.said and "请求太频繁" not in m.said[0]]
    assert len(answered) == EVERYONE
    assert sum(len(m.said) for m in sent) == EVERYONE + 1


def test_the_limit_lets_people_in_again_after_a_minute(tmp_path: Path) -> None:
    clock = Clock()
    handler = handler_for(tmp_path, clock)
    burst(handler, clock, ["/帮助"] * 10)
    clock.now += 60
    again = message("/帮助")
    assert asyncio.run(handler.handle(again)) is Outcome.REPLIED


@pytest.mark.parametrize(
    "hostile",
    ["\x00", "\u202e", "\u2066", "\u200b", "\x1b[31m", "\ufeff", "\u061c", "\U000e0041"],
)
def test_control_characters_are_never_echoed(tmp_path: Path, hostile: str) -> None:
    clock = Clock()
    handler = handler_for(tmp_path, clock)
    unknown = message(f"/fo{hostile}o")
    trimmed = message(f"/配图 海{hostile}边" + "海" * 400)
    for msg in (unknown, trimmed):
        asyncio.run(handler.handle(msg))
        assert msg.said, msg.text
        for reply in msg.said:
            assert hostile.replace("[31m", "") not in reply
            assert strip_controls(reply) == reply


def test_strip_controls_keeps_text_line_breaks_and_emoji() -> None:
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    assert strip_controls(f"海边\n日落\t{family}\x00\u202e") == f"海边\n日落\t{family}"
