"""Ctrl-C on a real `peitu` process: one line and exit 130, however often and whenever."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.chroma_server import _free_port
from tests.support.core_fixtures import REPO, SmallLibrary
from tests.support.openai_server import FakeOpenAIServer
from tests.test_cli import _env


def _start(env: dict[str, str], *args: str, importtime: bool = False) -> subprocess.Popen[str]:
    flags = ["-X", "importtime"] if importtime else []
    return subprocess.Popen(
        [sys.executable, *flags, "-m", "cli.main", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_until(condition: object, what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _assert_clean(stderr: str) -> None:
    assert "Traceback" not in stderr and "terminate called" not in stderr, stderr


def test_two_sigints_during_indexing_exit_130_at_once(
    tmp_path: Path, m3e_path: Path, small_library: SmallLibrary, openai_server: FakeOpenAIServer
) -> None:
    openai_server.set_mode("vision", delay_s=60)  # every describe is in flight when we press
    env = _env(
        tmp_path,
        m3e_path,
        PEITU_LIBRARY=str(small_library.root),
        PEITU_VISION__BASE_URL=openai_server.base_url,
        PEITU_VISION__MODEL="fake-vl",
        PEITU_VISION__TIMEOUT_S="120",
    )
    proc = _start(env, "index")
    _wait_until(lambda: openai_server.calls["vision"] >= 1, "the first vision call")
    proc.send_signal(signal.SIGINT)  # the first: waits for the photos being described...
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)  # ...the second quits now
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    _assert_clean(stderr)
    assert stderr.rstrip().endswith("peitu: 再次中断，立即退出")


def test_one_sigint_during_indexing_finishes_the_photos_in_flight_and_exits_130(
    tmp_path: Path, m3e_path: Path, small_library: SmallLibrary, openai_server: FakeOpenAIServer
) -> None:
    openai_server.set_mode("vision", delay_s=1)
    env = _env(
        tmp_path,
        m3e_path,
        PEITU_LIBRARY=str(small_library.root),
        PEITU_VISION__BASE_URL=openai_server.base_url,
        PEITU_VISION__MODEL="fake-vl",
    )
    proc = _start(env, "index")
    _wait_until(lambda: openai_server.calls["vision"] >= 1, "the first vision call")
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    _assert_clean(stderr)
    assert stderr.rstrip().endswith("peitu: 已中断，下次运行会接着做")


def test_a_sigint_while_the_libraries_load_prints_one_line(tmp_path: Path, m3e_path: Path) -> None:
    proc = _start(_env(tmp_path, m3e_path), "status", importtime=True)
    assert proc.stderr is not None
    # pydantic loads inside `main`, after it took over Ctrl-C, and before torch and chromadb.
    for line in proc.stderr:  # "import time: self | cumulative | <indent>module"
        if line.split("|")[-1].strip() == "pydantic":
            break
    else:
        raise AssertionError("pydantic was never imported")
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=60)
    assert proc.returncode == 130, rest
    _assert_clean(rest)
    assert rest.rstrip().endswith("peitu: 已中断")


def test_ctrl_c_stops_the_server_without_the_indexing_message(
    tmp_path: Path, m3e_path: Path
) -> None:
    port = _free_port()
    proc = _start(_env(tmp_path, m3e_path), "serve", "--port", str(port))

    def healthy() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    _wait_until(healthy, "the server")
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    _assert_clean(stderr)
    assert stderr.rstrip().endswith("peitu: 已停止") and "接着做" not in stderr


def test_two_sigints_during_offline_describing_exit_130_not_134(
    tmp_path: Path, m3e_path: Path, small_library: SmallLibrary
) -> None:
    """The offline describer runs onnxruntime and torch threads: an interpreter shutdown under
    them aborted ("terminate called without an active exception", exit 134)."""
    env = _env(tmp_path, m3e_path, PEITU_LIBRARY=str(small_library.root))
    proc = _start(env, "index", "--describer", "offline")
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.rstrip().endswith("describe: 30 to do"):
            break
    else:
        raise AssertionError("the describe phase never started")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    assert proc.returncode == 130, rest
    _assert_clean(rest)


_CTRL_C_LANDS_IN_A_LOCK = """
import signal, sys
import cli.main as cli_main

def run(argv, command):
    command.append("index")
    try:
        signal.raise_signal(signal.SIGINT)  # the Ctrl-C handler raises KeyboardInterrupt here
    except KeyboardInterrupt:
        # where a thread pool's lock was being released: Python reports this instead
        raise RuntimeError("release unlocked lock")
    return 0

cli_main._run = run
sys.exit(cli_main.main([]))
"""


def test_a_ctrl_c_that_surfaces_as_a_lock_error_still_exits_130() -> None:
    """A KeyboardInterrupt raised inside threading's own lock code comes out as "RuntimeError:
    release unlocked lock"; seen in CI as a traceback and a death by SIGINT (-2)."""
    done = subprocess.run(
        [sys.executable, "-c", _CTRL_C_LANDS_IN_A_LOCK],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip() == "peitu: 已中断，下次运行会接着做"
