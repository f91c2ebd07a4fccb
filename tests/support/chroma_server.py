"""A real `chroma run` server on a free loopback port, for the client/server mode."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _chroma_command() -> list[str]:
    beside_python = Path(sys.executable).with_name("chroma")
    found = str(beside_python) if beside_python.exists() else shutil.which("chroma")
    if found is None:
        raise RuntimeError("the `chroma` command (from the chromadb package) is not installed")
    return [found]


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chroma run exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"chroma run did not answer at {url} within {timeout_s} s")


@contextmanager
def chroma_server(data_dir: Path) -> Iterator[str]:
    """Start `chroma run` on 127.0.0.1; yields its URL; stops it on exit."""
    port = _free_port()
    command = [*_chroma_command(), "run", "--path", str(data_dir), "--host", "127.0.0.1"]
    proc = subprocess.Popen(
        [*command, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
