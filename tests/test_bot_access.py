"""The bot's pairing record in the data folder: one person per code, guessers stopped, shared
by every process that opens the folder."""

from __future__ import annotations

import itertools
import json
import multiprocessing
from collections.abc import Callable
from multiprocessing.queues import Queue
from pathlib import Path

from index.library.pairing import (
    FILE_NAME,
    WRONG_IN_ALL,
    WRONG_PER_PERSON,
    BotAccess,
    Pairing,
)


def counting_codes() -> Callable[[], str]:
    """Codes 100000, 100001, ...: each new code is known to the test."""
    numbers = itertools.count(100_000)
    return lambda: str(next(numbers))


def test_a_code_lets_in_one_person_and_is_then_replaced(tmp_path: Path) -> None:
    access = BotAccess(tmp_path, make_code=counting_codes())
    code = access.code()
    assert access.code() == code == "100000"  # the same until it is used
    assert access.pair(code, "wxid_owner", "我") is Pairing.PAIRED
    assert access.pair(code, "wxid_owner", "我") is Pairing.ALREADY
    assert access.pair(code, "wxid_other", "别人") is Pairing.WRONG  # used: no longer the code
    assert access.code() == "100001"
    assert access.paired_ids() == {"wxid_owner"}
    again = BotAccess(tmp_path)  # another process, or the next start
    assert again.paired_ids() == {"wxid_owner"} and again.code() == "100001"
    assert json.loads((tmp_path / FILE_NAME).read_text())["paired"][0]["name"] == "我"


def test_a_guesser_is_stopped_and_the_code_replaced(tmp_path: Path) -> None:
    access = BotAccess(tmp_path, make_code=counting_codes())
    code = access.code()
    for _ in range(WRONG_PER_PERSON):
        assert access.pair("999999", "wxid_guess", "猜") is Pairing.WRONG
    assert access.pair(code, "wxid_guess", "猜") is Pairing.LOCKED  # even the right code now
    for n in range(WRONG_IN_ALL - WRONG_PER_PERSON - 1):
        assert access.pair("999999", f"wxid_{n}", "x") is Pairing.WRONG
    assert access.code() == code
    assert access.pair("999999", "wxid_last", "x") is Pairing.WRONG  # the 20th wrong code
    assert access.code() != code  # replaced: the guesses so far are worth nothing
    assert access.pair(access.code(), "wxid_guess", "猜") is Pairing.PAIRED  # and the lock goes


def _pair_with(folder: str, code: str, who: str, results: Queue[tuple[str, str]]) -> None:
    results.put((who, BotAccess(Path(folder)).pair(code, who, who).value))


def test_two_processes_sending_the_code_at_once_let_in_exactly_one(tmp_path: Path) -> None:
    code = BotAccess(tmp_path).code()
    spawn = multiprocessing.get_context("spawn")
    results = spawn.Queue()
    children = [
        spawn.Process(target=_pair_with, args=(str(tmp_path), code, who, results))
        for who in ("wxid_a", "wxid_b", "wxid_c")
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
    outcomes = sorted(results.get(timeout=10)[1] for _ in children)
    assert outcomes == ["paired", "wrong", "wrong"]
    assert len(BotAccess(tmp_path).paired_ids()) == 1


def test_any_text_is_a_wrong_code_never_an_error(tmp_path: Path) -> None:
    """What a chat or an API client may send: letters, emoji, a lone surrogate from JSON."""
    access = BotAccess(tmp_path)
    for code in ("ÔlÖ\ud8f8", "😀" * 6, "", "１２３４５６"):
        assert access.pair(code, "wxid_\udc00", "名字\ud800") is Pairing.WRONG
    assert json.loads((tmp_path / FILE_NAME).read_text())["wrong"] == {"wxid_?": 4}
