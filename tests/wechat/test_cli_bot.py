"""`peitu bot` as a real process: the composition root, the CLI wiring, and a clean SIGTERM."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from index.service import PeiTu
from server.app import create_app
from tests.server.conftest import TOKEN as ADMIN_TOKEN
from tests.server.conftest import serving
from tests.support.core_fixtures import m3e_small_path
from tests.support.openai_server import FakeOpenAIServer
from tests.wechat.conftest import IndexedLibrary, core_settings
from tests.wechat.harness import TOKEN, WechatHarness

pytestmark = pytest.mark.e2e

SEA = "带孩子去海边玩水，好开心"


@pytest.fixture
def gateway(gateway_dir: Path, tmp_path: Path) -> Iterator[WechatHarness]:
    harness = WechatHarness(gateway_dir, tmp_path / "gateway.log")
    try:
        harness.start_gateway()
        yield harness
    finally:
        harness.close()


def bot_environment(port: int, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEITU_")}
    env.update(
        PEITU_WECHAT__ENDPOINT=f"127.0.0.1:{port}",
        PEITU_WECHAT__TOKEN=TOKEN,
        PEITU_DATA_DIR=str(data_dir),
        PEITU_EMBEDDING__MODEL=str(m3e_small_path()),
        PEITU_RERANK__ENABLED="false",
    )
    return env


def wait_for_line(path: Path, needle: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in path.read_text(encoding="utf-8", errors="replace"):
            return
        time.sleep(0.1)
    pytest.fail(f"{needle!r} not in {path} within {timeout} s")


def pair_with_the_code_in_the_log(gateway: WechatHarness, log_path: Path) -> None:
    """The bot is private: pair as its owner would, with the code its log shows at start."""
    found = re.search(r"/绑定 (\d{6})", log_path.read_text(encoding="utf-8", errors="replace"))
    assert found, log_path.read_text(encoding="utf-8", errors="replace")
    gateway.say(f"/绑定 {found.group(1)}")
    assert "绑定成功" in gateway.reply()[0]["text"]


def test_peitu_bot_serves_and_stops_cleanly_on_sigterm(
    gateway: WechatHarness, tmp_path: Path
) -> None:
    log_path = tmp_path / "bot.log"
    with log_path.open("wb") as log:
        bot = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "bot"],
            env=bot_environment(gateway.port, tmp_path / "data"),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_line(log_path, "logged in to WeChat")
            pair_with_the_code_in_the_log(gateway, log_path)
            gateway.say("/状态")
            text, _ = gateway.reply()
            assert "已索引 0 张照片" in text["text"]
            bot.send_signal(signal.SIGTERM)
            assert bot.wait(timeout=20) == 0
        finally:
            if bot.poll() is None:
                bot.kill()
                bot.wait()
    output = log_path.read_text(encoding="utf-8")
    assert "the index is empty" in output and "logged in to WeChat" in output
    assert "bot stopped" in output and "Traceback" not in output
    assert TOKEN not in output


@pytest.fixture
def server_url(
    peitu: PeiTu, indexed_library: IndexedLibrary, openai_server: FakeOpenAIServer
) -> Iterator[str]:
    """The real FastAPI app over the indexed library, on a real loopback port."""
    settings = core_settings(indexed_library, openai_server.base_url, admin_token=ADMIN_TOKEN)
    with serving(create_app(peitu, settings)) as url:
        yield url


def test_peitu_bot_with_a_server_url_asks_the_server_and_opens_no_index(
    gateway: WechatHarness, server_url: str, peitu: PeiTu, tmp_path: Path
) -> None:
    env = bot_environment(gateway.port, tmp_path / "data")
    env.update(PEITU_BOT__SERVER_URL=server_url, PEITU_ADMIN_TOKEN=ADMIN_TOKEN)
    log_path = tmp_path / "bot.log"
    expected = peitu.recommend(SEA)
    with log_path.open("wb") as log:
        bot = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "bot"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            wait_for_line(log_path, "logged in to WeChat")
            pair_with_the_code_in_the_log(gateway, log_path)  # kept by the server
            gateway.say("/状态")
            assert "已索引 30 张照片" in gateway.reply()[0]["text"]
            gateway.say(f"/配图 {SEA}")
            _, files = gateway.reply(photos=len(expected.results))
            paths = [peitu.photo_path(r.photo_id) for r in expected.results]
            assert [f["sha256"] for f in files] == [
                hashlib.sha256(p.read_bytes()).hexdigest() for p in paths if p is not None
            ]
            bot.send_signal(signal.SIGTERM)
            assert bot.wait(timeout=20) == 0
        finally:
            if bot.poll() is None:
                bot.kill()
                bot.wait()
    output = log_path.read_text(encoding="utf-8")
    assert f"asks the PeiTu server at {server_url}" in output and "serving 30 indexed" in output
    assert not (tmp_path / "data").exists()  # no catalog, no Chroma folder of its own
    assert "Traceback" not in output and ADMIN_TOKEN not in output


def test_peitu_bot_refuses_to_start_when_the_server_refuses_its_token(
    server_url: str, tmp_path: Path
) -> None:
    env = bot_environment(9, tmp_path / "data")  # refused before it connects to any gateway
    env.update(PEITU_BOT__SERVER_URL=server_url, PEITU_ADMIN_TOKEN="not-the-servers-token")
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "bot"], env=env, capture_output=True, timeout=60
    )
    output = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 2, output
    assert "the server refused the bot's token (401" in output and "Traceback" not in output
