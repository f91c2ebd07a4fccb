"""`peitu bot` as a real process: the composition root, the CLI wiring, and a clean SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.core_fixtures import m3e_small_path
from tests.wechat.harness import TOKEN, WechatHarness

pytestmark = pytest.mark.e2e


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
