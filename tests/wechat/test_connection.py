"""Connecting: settings that cannot work, a refused token, and reconnecting after a lost gateway."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

import bot.main
from bot.errors import BotConfigError
from bot.handler import Outcome
from bot.wechat import create_bot, puppet_options, run_bot
from config.settings import WechatSettings, load_settings
from tests.wechat.conftest import StartWechat
from tests.wechat.fakes import FakeFinder
from tests.wechat.harness import WechatHarness


def test_no_endpoint_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(BotConfigError, match="PEITU_WECHAT__ENDPOINT=host:port"):
        create_bot(FakeFinder(), WechatSettings(), tmp_path)


@pytest.mark.parametrize("endpoint", ["localhost", ":8788", "host:port", "host:70000"])
def test_malformed_endpoint_is_refused(endpoint: str) -> None:
    with pytest.raises(BotConfigError, match="must be host:port"):
        puppet_options(WechatSettings(endpoint=endpoint))


def test_each_bot_gets_fresh_puppet_options() -> None:
    first = puppet_options(WechatSettings(endpoint="127.0.0.1:1", token=SecretStr("a")))
    second = puppet_options(WechatSettings(endpoint="127.0.0.1:2"))
    assert first is not second
    assert (first.end_point, first.token) == ("127.0.0.1:1", "a")
    assert (second.end_point, second.token) == ("127.0.0.1:2", None)


def test_run_bot_without_endpoint_raises() -> None:
    with pytest.raises(BotConfigError):
        asyncio.run(run_bot(FakeFinder(), WechatSettings()))


def test_peitu_bot_exits_2_without_endpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    assert bot.main.run(settings) == bot.main.EXIT_REFUSED
    assert "PEITU_WECHAT__ENDPOINT" in caplog.text
    assert not (tmp_path / "data").exists()  # refused before building anything


def test_peitu_bot_chooses_its_platform_by_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert bot.main.platform_named("wechat") is bot.main.PLATFORMS["wechat"]
    settings = load_settings(data_dir=tmp_path / "data", chat={"platform": "telegram"})
    assert bot.main.run(settings) == bot.main.EXIT_REFUSED
    refusal = "PEITU_CHAT__PLATFORM='telegram' is not a messenger PeiTu can serve (one of: wechat)"
    assert refusal in caplog.text
    assert not (tmp_path / "data").exists()  # refused before building anything


def test_wrong_token_fails_loudly(gateway_dir: Path, tmp_path: Path) -> None:
    harness = WechatHarness(gateway_dir, tmp_path / "gateway.log")
    try:
        harness.start_gateway()
        with pytest.raises(BotConfigError, match="refused the token"):
            harness.start_bot(FakeFinder(), WechatSettings(), tmp_path, token="wrong")
    finally:
        harness.close()


def test_reconnects_after_the_gateway_comes_back(
    start_wechat: StartWechat, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.wechat")
    chat = start_wechat(FakeFinder())
    chat.stop_gateway()
    chat.start_gateway(port=chat.port)
    chat.wait_logged_in()
    chat.say("/帮助")
    text, _ = chat.reply()
    assert text["to"] == chat.ids["aliceId"] and "/配图" in text["text"]
    assert chat.next_outcome() is Outcome.REPLIED
    assert "lost puppet service" in caplog.text and "reconnecting" in caplog.text


def test_a_gateway_that_stops_answering_is_noticed_and_reconnected(
    start_wechat: StartWechat, caplog: pytest.LogCaptureFixture
) -> None:
    """A frozen gateway keeps its TCP connection open: only the keep-alive ping can tell."""
    caplog.set_level(logging.INFO, logger="bot.wechat")
    chat = start_wechat(FakeFinder(), keepalive_s=1.0)
    gateway = chat.gateway_process()
    gateway.send_signal(signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 60
        while "no answer to a keep-alive ping" not in caplog.text:
            assert time.monotonic() < deadline, "the frozen gateway was never noticed"
            time.sleep(0.1)
    finally:
        gateway.send_signal(signal.SIGCONT)
    assert chat.bot is not None
    chat.wait_logged_in(expect_mock_login=False)
    chat.say("/帮助")
    text, _ = chat.reply()
    assert "/配图" in text["text"]
    assert chat.next_outcome() is Outcome.REPLIED
