"""The harness itself: gateway up, real python-wechaty client logged in, a round trip, teardown."""

from __future__ import annotations

from bot.handler import Outcome
from tests.wechat.conftest import StartWechat
from tests.wechat.fakes import FakeFinder


def test_bot_logs_in_and_answers_help(start_wechat: StartWechat) -> None:
    chat = start_wechat(FakeFinder())
    chat.say("/帮助")
    text, _ = chat.reply()
    assert "/配图 <文案>" in text["text"]
    assert text["to"] == chat.ids["aliceId"]
    assert chat.next_outcome() is Outcome.REPLIED
