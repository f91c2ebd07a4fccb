"""Progress of `peitu index`: log lines on a non-terminal, phase-own bars on a terminal, and no
INFO chatter from the libraries underneath."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from PIL import Image

from cli.main import QUIET_LOGGERS, _configure_logging
from cli.progress import ProgressLog, _bars
from tests.support.openai_server import FakeOpenAIServer
from tests.test_cli import _env, peitu


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_log_names_the_phase_count_and_rate_at_start_ticks_and_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = _Clock()
    progress = ProgressLog(clock=clock, logger=logging.getLogger("test.progress"))
    with caplog.at_level(logging.INFO, logger="test.progress"):
        progress.tick()  # nothing started yet: silent
        progress.update("embed", 0, 200)
        clock.now += 4
        progress.update("embed", 64, 200)
        progress.tick()  # what the ticker thread does every few seconds
        clock.now += 4
        progress.tick()  # no batch finished meanwhile: still a line
        clock.now += 2
        progress.update("embed", 200, 200)
        progress.tick()  # the phase is over: silent
    assert [r.getMessage() for r in caplog.records] == [
        "embed: 200 to do",
        "embed: 64/200 (16.0 张/s)",
        "embed: 64/200 (8.0 张/s)",
        "embed: 200/200 done in 10.0 s (20.0 张/s)",
    ]


def test_a_phase_bar_is_closed_when_the_phase_ends() -> None:
    out = io.StringIO()
    with _bars(out) as update:
        for done in range(4):
            update("scan", done, 3)
        update("describe", 0, 2)
        update("describe", 1, 2)
    text = out.getvalue()
    first_describe = text.index("描述")
    assert "扫描" not in text[first_describe:]  # the scan bar was not drawn again (nor its time)
    assert text[:first_describe].rstrip("\r").endswith("\n")  # it was closed: its own line


def test_libraries_are_quiet_at_info() -> None:
    _configure_logging("INFO", verbose=False)
    for name in ("httpx2", "httpx", "chromadb", "sentence_transformers", "openai"):
        assert name in QUIET_LOGGERS
        assert not logging.getLogger(name).isEnabledFor(logging.INFO)


def test_index_on_a_non_terminal_logs_each_phase_and_no_http_requests(
    tmp_path: Path, m3e_path: Path, openai_server: FakeOpenAIServer
) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    for i, rgb in enumerate(((40, 90, 220), (210, 30, 30), (40, 170, 60))):
        Image.new("RGB", (64, 48), rgb).save(library / f"{i}.jpg")
    env = _env(
        tmp_path,
        m3e_path,
        PEITU_LIBRARY=str(library),
        PEITU_VISION__BASE_URL=openai_server.base_url,
        PEITU_VISION__MODEL="fake-vl",
    )
    proc = peitu(env, "index")
    assert proc.returncode == 0, proc.stderr
    for line in ("scan: 3/3 done", "describe: 3/3 done", "embed: 3/3 done"):
        assert line in proc.stderr
    assert "HTTP Request" not in proc.stderr and "httpx" not in proc.stderr
