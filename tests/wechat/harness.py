"""Drive the real bot over a real local WeChat gateway from synchronous test code.

`WechatHarness` starts `gateway/gateway.js` (Node: wechaty-puppet-service's PuppetServer backed by
wechaty-puppet-mock) on a free loopback port, then runs the real bot (`bot.wechat.create_bot`,
python-wechaty over gRPC) on an asyncio loop in a background thread, and waits for the login.
A test then writes what people say to the gateway's stdin and reads what the bot sent back from
its stdout (text, or file name, media type, size and SHA-256 of each image).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import IO, Any, TypeVar

import pytest
from pydantic import SecretStr

from bot.handler import Outcome
from bot.ports import BotPairing, PhotoFinder
from bot.wechat import PeiTuBot, create_bot
from config.settings import ChatSettings, WechatSettings

GATEWAY_DIR = Path(os.environ.get("PEITU_WX_GATEWAY_DIR", Path(__file__).parent / "gateway"))
TOKEN = "insecure_local_test_token"
BOT_NAME = "PhotoBot"
GATEWAY_START_TIMEOUT_S = 30.0
LOGIN_TIMEOUT_S = 20.0
REPLY_TIMEOUT_S = 30.0
Event = dict[str, Any]
_T = TypeVar("_T")


def require_gateway() -> Path:
    """The gateway folder; fails under CI=true (skips elsewhere) when Node parts are missing."""
    problem = None
    if shutil.which("node") is None:
        problem = "node is not installed"
    elif not (GATEWAY_DIR / "node_modules" / "wechaty-puppet-mock").is_dir():
        problem = f"{GATEWAY_DIR}/node_modules is missing: run `bash scripts/setup_node.sh`"
    if problem is None:
        return GATEWAY_DIR
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"WeChat gateway unavailable: {problem}")
    pytest.skip(f"WeChat gateway unavailable: {problem}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def is_text(event: Event) -> bool:
    return event.get("event") == "bot-said" and not event.get("fileName")


def is_file(event: Event) -> bool:
    return event.get("event") == "bot-said" and bool(event.get("fileName"))


class WechatHarness:
    """One gateway process and one bot; `close()` tears both down."""

    def __init__(self, gateway_dir: Path, log_path: Path) -> None:
        self.gateway_dir = gateway_dir
        self.log_path = log_path
        self.events: queue.Queue[Event] = queue.Queue()
        self.outcomes: queue.Queue[Outcome] = queue.Queue()
        self.own_messages: queue.Queue[Outcome] = queue.Queue()
        self.bot: PeiTuBot | None = None
        self.ids: Event = {}
        self.port = 0
        self._gateway: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._bot_task: asyncio.Task[None] | None = None

    # --- start and stop ---------------------------------------------------------------------

    def start(
        self,
        finder: PhotoFinder,
        settings: WechatSettings,
        cache_dir: Path,
        pairing: BotPairing | None = None,
        chat: ChatSettings | None = None,
    ) -> None:
        """Gateway up, bot connected and logged in, or a test failure saying which step hung."""
        self.start_gateway()
        self.start_bot(finder, settings, cache_dir, pairing=pairing, chat=chat)

    def start_gateway(self, port: int | None = None, token: str = TOKEN) -> None:
        """Start gateway.js (on `port`, else a free one) and wait until it serves."""
        self.port = port or free_port()
        self._log = self._log or self.log_path.open("ab")
        env = {**os.environ, "GW_PORT": str(self.port), "GW_TOKEN": token}
        self._gateway = subprocess.Popen(
            ["node", "gateway.js"],
            cwd=self.gateway_dir,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        threading.Thread(target=self._pump, args=(self._gateway.stdout,), daemon=True).start()
        self.expect(lambda e: e.get("event") == "ready", GATEWAY_START_TIMEOUT_S, "gateway ready")

    def start_bot(
        self,
        finder: PhotoFinder,
        settings: WechatSettings,
        cache_dir: Path,
        token: str = TOKEN,
        pairing: BotPairing | None = None,
        chat: ChatSettings | None = None,
    ) -> None:
        """Run the bot against the gateway; return once it logged in (fail after a timeout)."""
        settings = settings.model_copy(
            update={"endpoint": f"127.0.0.1:{self.port}", "token": SecretStr(token)}
        )
        self._thread.start()
        self._call(self._start_bot(finder, settings, cache_dir, pairing, chat))
        self.ids = self.expect(lambda e: e.get("event") == "mock-login", 5.0, "mock login")

    def wait_logged_in(
        self, timeout: float = LOGIN_TIMEOUT_S, *, expect_mock_login: bool = True
    ) -> None:
        """Wait for the bot to be logged in (again, after a reconnect); a gateway started anew
        logs its mock account in again, one that kept running does not."""
        assert self.bot is not None
        self._call(asyncio.wait_for(self.bot.logged_in.wait(), timeout), timeout + 1.0)
        if expect_mock_login:
            self.ids = self.expect(lambda e: e.get("event") == "mock-login", 5.0, "mock login")

    def gateway_process(self) -> subprocess.Popen[bytes]:
        """The running gateway (to freeze it, say)."""
        assert self._gateway is not None
        return self._gateway

    def _pump(self, stdout: IO[bytes]) -> None:
        for line in stdout:
            with contextlib.suppress(ValueError):
                self.events.put(json.loads(line))

    async def _start_bot(
        self,
        finder: PhotoFinder,
        settings: WechatSettings,
        cache: Path,
        pairing: BotPairing | None = None,
        chat: ChatSettings | None = None,
    ) -> None:
        self.bot = create_bot(
            finder, settings, cache, chat=chat, on_handled=self._handled, pairing=pairing
        )
        self._bot_task = asyncio.create_task(self.bot.run_forever())
        login = asyncio.create_task(self.bot.logged_in.wait())
        await asyncio.wait(
            {login, self._bot_task}, timeout=LOGIN_TIMEOUT_S, return_when="FIRST_COMPLETED"
        )
        if not login.done():
            login.cancel()
            if self._bot_task.done():
                self._bot_task.result()  # raises what stopped the bot (e.g. a refused token)
            raise AssertionError(
                f"bot did not log in within {LOGIN_TIMEOUT_S} s; see {self.log_path}"
            )

    def _handled(self, _message_id: str, outcome: Outcome) -> None:
        # The bot's own messages (its replies among them) are counted apart from people's.
        (self.own_messages if outcome is Outcome.OWN_MESSAGE else self.outcomes).put(outcome)

    def close(self) -> None:
        """Stop the bot (cancel its task), close the gateway's stdin, stop the loop thread."""
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self._call(self._stop_bot(), timeout=15.0)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10.0)
        if not self._loop.is_running():
            self._loop.close()
        self.stop_gateway()
        if self._log is not None:
            self._log.close()

    async def _stop_bot(self) -> None:
        if self.bot is not None:
            await asyncio.wait_for(self.bot.shutdown(), 10.0)
        if self._bot_task is not None:
            self._bot_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._bot_task
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def stop_gateway(self) -> None:
        """Close the gateway's stdin (it exits then) and wait for it; kill it if it hangs."""
        gateway = self._gateway
        if gateway is not None and gateway.stdin is not None:
            with contextlib.suppress(OSError):
                gateway.stdin.write(b'{"cmd": "quit"}\n')
                gateway.stdin.close()  # the gateway exits when its stdin closes
            try:
                gateway.wait(timeout=10.0)
            except subprocess.TimeoutExpired:
                gateway.kill()
                gateway.wait()
        self._gateway = None

    def _call(self, coro: Any, timeout: float = LOGIN_TIMEOUT_S + 10.0) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    # --- talking to the bot -----------------------------------------------------------------

    def say(
        self,
        text: str | None = None,
        *,
        sender: str = "Alice",
        file: Path | None = None,
        room: bool = False,
        mention: bool = False,
        as_bot: bool = False,
    ) -> None:
        """A person sends text or an image file, in a 1:1 chat or in the room "Family"; with
        `as_bot` the bot's own account writes it (to `sender`, or in the room)."""
        command: Event = {"cmd": "say", "from": sender, "room": room, "mention": mention}
        if as_bot:
            command["self"] = True
        if file is not None:
            command["file"] = str(file)
        else:
            command["text"] = f"@{BOT_NAME} {text}" if mention else text
        assert self._gateway is not None and self._gateway.stdin is not None
        self._gateway.stdin.write((json.dumps(command, ensure_ascii=False) + "\n").encode())
        self._gateway.stdin.flush()

    def expect(
        self, wanted: Callable[[Event], bool], timeout: float = REPLY_TIMEOUT_S, what: str = "event"
    ) -> Event:
        """The next gateway event that matches, skipping others; fails after `timeout`."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                break
            if event.get("event") == "error":
                pytest.fail(f"gateway error: {event.get('error')}")
            if wanted(event):
                return event
        pytest.fail(f"no {what} from the gateway within {timeout} s; see {self.log_path}")

    def reply(self, photos: int = 0, timeout: float = REPLY_TIMEOUT_S) -> tuple[Event, list[Event]]:
        """The bot's next text message and the `photos` image messages that follow it."""
        text = self.expect(is_text, timeout, "text reply")
        files = [self.expect(is_file, timeout, f"image {n + 1}") for n in range(photos)]
        return text, files

    def next_outcome(self, timeout: float = REPLY_TIMEOUT_S) -> Outcome:
        """How the bot handled the next message it received (it reports every one)."""
        try:
            return self.outcomes.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"the bot handled no message within {timeout} s")

    def bot_said(self) -> list[Event]:
        """Everything the bot sent that has not been read yet."""
        said = []
        with contextlib.suppress(queue.Empty):
            while True:
                event = self.events.get_nowait()
                if event.get("event") == "bot-said":
                    said.append(event)
        return said


@contextlib.contextmanager
def running_harness(
    gateway_dir: Path,
    log_path: Path,
    finder: PhotoFinder,
    settings: WechatSettings,
    cache: Path,
    pairing: BotPairing | None = None,
    chat: ChatSettings | None = None,
) -> Iterator[WechatHarness]:
    """A started harness, closed on exit whatever happened."""
    harness = WechatHarness(gateway_dir, log_path)
    try:
        harness.start(finder, settings, cache, pairing, chat)
        yield harness
    finally:
        harness.close()
