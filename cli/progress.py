"""Progress of `peitu index`: tqdm bars on a terminal, log lines anywhere else.

On a terminal each phase (scan, describe, embed) gets its own bar, closed when the phase ends so
that its time is the phase's own. Elsewhere (a pipe, a log file, `docker logs`) each phase logs
when it starts and ends, and every few seconds in between, with its count and rate, even when
no photo finished meanwhile (a slow vision model, a long embedding batch).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

from index.models import ProgressCallback

log = logging.getLogger("peitu.index")

PHASE_NAMES = {"scan": "扫描", "describe": "描述", "embed": "向量化", "visual": "视觉特征"}
LOG_INTERVAL_S = 5.0


@contextmanager
def progress_output(*, terminal: bool) -> Iterator[ProgressCallback]:
    """The progress callback for an index run: bars on a terminal, else log lines."""
    if terminal:
        with _bars() as update:
            yield update
        return
    progress = ProgressLog()
    with progress.ticking():
        yield progress.update


@contextmanager
def _bars(stream: IO[str] | None = None) -> Iterator[ProgressCallback]:
    """One tqdm bar a phase, on `stream` (stderr by default)."""
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def update(phase: str, done: int, total: int) -> None:
        bar = bars.get(phase)
        if bar is None:
            for other in bars.values():  # a new phase: the earlier ones are over
                other.close()
            name = PHASE_NAMES.get(phase, phase)
            bar = bars[phase] = tqdm(total=total, desc=name, unit="张", file=stream)
        bar.total = total
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()  # stops its clock: the bar shows the phase's own time

    try:
        yield update
    finally:
        for bar in bars.values():
            bar.close()


class ProgressLog:
    """Progress as log lines: a phase's start and end, and `tick()` every `interval_s`."""

    def __init__(
        self,
        interval_s: float = LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = log,
    ) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._log = logger
        self._lock = threading.Lock()
        self._phase: str | None = None
        self._started = 0.0
        self._done = 0
        self._total = 0
        self._ended = False

    def update(self, phase: str, done: int, total: int) -> None:
        """The progress callback: (phase, photos done, photos in the phase)."""
        with self._lock:
            if phase != self._phase:
                self._phase, self._started, self._ended = phase, self._clock(), False
                self._log.info("%s: %d to do", phase, total)
            self._done, self._total = done, total
            if done >= total and not self._ended:
                self._ended = True
                elapsed = self._clock() - self._started
                self._log.info(
                    "%s: %d/%d done in %.1f s%s", phase, done, total, elapsed, self._rate()
                )

    def tick(self) -> None:
        """Log where the current phase is (called every `interval_s` while it runs)."""
        with self._lock:
            if self._phase is not None and not self._ended:
                self._log.info("%s: %d/%d%s", self._phase, self._done, self._total, self._rate())

    def _rate(self) -> str:
        elapsed = self._clock() - self._started
        return f" ({self._done / elapsed:.1f} 张/s)" if elapsed > 0 and self._done else ""

    @contextmanager
    def ticking(self) -> Iterator[None]:
        """Call `tick` every `interval_s` from a daemon thread for the block."""
        stop = threading.Event()

        def run() -> None:
            while not stop.wait(self._interval_s):
                self.tick()

        thread = threading.Thread(target=run, name="peitu-progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
