"""A private bot by default, over the real gateway: a stranger's /配图 gets one polite line and
no photo; the owner sends the pairing code (from `peitu doctor`, as a person reads it) and is
served from then on, in both of the bot's modes (the core in its process, or a server over HTTP
keeping the pairing in its data folder)."""

from __future__ import annotations

import logging
import re

import pytest

from bot.handler import Outcome
from bot.ports import BotPairing, PhotoFinder
from bot.server_client import ServerFinder
from config.settings import load_settings
from index.doctor import check_bot
from index.library.pairing import BotAccess
from index.service import PeiTu
from tests.wechat.conftest import IndexedLibrary, StartWechat

SEA = "傍晚的海边，海浪拍打着礁石"


def doctor_code(indexed: IndexedLibrary) -> str:
    """The pairing code as `peitu doctor` (and the web page's 运行检查) shows it."""
    settings = load_settings(data_dir=indexed.data_dir, wechat={"endpoint": "127.0.0.1:1"})
    found = re.search(r"/绑定 (\d{6})", check_bot(settings).message)
    assert found, check_bot(settings).message
    return found.group(1)


def pairing_of(finder: PhotoFinder, peitu: PeiTu) -> BotPairing:
    """The bot's pairing in its mode: the server's over HTTP, or the core's own."""
    return finder if isinstance(finder, ServerFinder) else peitu.bot_access


@pytest.fixture(autouse=True)
def no_one_paired(indexed_library: IndexedLibrary) -> None:
    """Each test starts with a bot nobody is paired with (the library is shared)."""
    (indexed_library.data_dir / "bot-access.json").unlink(missing_ok=True)


def test_a_stranger_gets_one_polite_line_and_the_owner_pairs_with_the_code(
    start_wechat: StartWechat,
    bot_finder: PhotoFinder,
    peitu: PeiTu,
    indexed_library: IndexedLibrary,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bot")
    chat = start_wechat(bot_finder, pairing_of(bot_finder, peitu))
    chat.say(f"/配图 {SEA}", sender="Bob")
    assert chat.next_outcome() is Outcome.NOT_ALLOWED
    polite, photos = chat.reply()
    assert "私人的" in polite["text"] and "/绑定" in polite["text"] and photos == []
    assert polite["to"] == chat.ids["bobId"]
    chat.say(f"/配图 {SEA}", sender="Bob")  # told once: nothing more, and no photo ever
    assert chat.next_outcome() is Outcome.NOT_ALLOWED
    assert chat.bot_said() == []
    refused = [r.getMessage() for r in caplog.records if "refused a command" in r.getMessage()]
    assert len(refused) == 2 and all(f"(id {chat.ids['bobId']})" in line for line in refused)

    chat.say("/绑定 000000")  # a wrong code
    assert "配对码不对" in chat.reply()[0]["text"]
    code = doctor_code(indexed_library)
    assert f"/绑定 {code}" in caplog.text  # the bot's log said it as it started
    chat.say(f"/绑定 {code}")
    assert "绑定成功" in chat.reply()[0]["text"]
    chat.say(f"/配图 {SEA}")
    text, photos = chat.reply(photos=1)
    assert text["to"] == chat.ids["aliceId"] and photos
    assert doctor_code(indexed_library) != code  # one person per code
    kept = BotAccess(indexed_library.data_dir).paired()
    assert [person.contact_id for person in kept] == [chat.ids["aliceId"]]  # in the data folder

    chat.say(f"/绑定 {code}", sender="Bob")  # the used code lets nobody else in
    assert "配对码不对" in chat.reply()[0]["text"]


def test_a_code_sent_in_a_room_is_replaced_not_used(
    start_wechat: StartWechat, peitu: PeiTu, indexed_library: IndexedLibrary
) -> None:
    chat = start_wechat(peitu, peitu.bot_access)
    code = doctor_code(indexed_library)
    chat.say(f"/绑定 {code}", room=True, mention=True)
    assert "已经作废" in chat.reply()[0]["text"]
    assert doctor_code(indexed_library) != code
    chat.say(f"/绑定 {code}")
    assert "配对码不对" in chat.reply()[0]["text"]


def test_rooms_keep_their_rules_and_allow_everyone_opens_the_bot(
    start_wechat: StartWechat, peitu: PeiTu, indexed_library: IndexedLibrary
) -> None:
    chat = start_wechat(peitu, peitu.bot_access, allow_rooms=["Family"])
    chat.say("/帮助", sender="Bob", room=True)  # a listed room still needs the @-mention
    assert chat.next_outcome() is Outcome.IGNORED
    chat.say("/帮助", sender="Bob", room=True, mention=True)
    assert chat.reply()[0]["to"] == chat.ids["roomId"]
    chat.close()
    everyone = start_wechat(peitu, peitu.bot_access, allow_everyone=True)
    everyone.say(f"/配图 {SEA}", sender="Bob")
    text, photos = everyone.reply(photos=1)
    assert text["to"] == everyone.ids["bobId"] and photos
