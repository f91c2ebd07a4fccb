"""One indexing job at a time, across threads and processes (CLI, server, scheduler).

An exclusive `flock` on a file in the data folder; the kernel drops it when the holder dies,
so a crashed run never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from index.errors import IndexBusy

log = logging.getLogger(__name__)


class IndexLock:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._thread_lock = threading.Lock()

    @contextmanager
    def hold(self, job_id: str) -> Iterator[None]:
        """Hold the lock for the block; raise `IndexBusy` with the holder's job id if taken."""
        if not self._thread_lock.acquire(blocking=False):
            raise IndexBusy(self.holder())
        try:
            with self._file_lock(job_id):
                yield
        finally:
            self._thread_lock.release()

    @contextmanager
    def _file_lock(self, job_id: str) -> Iterator[None]:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not _take_exclusive(fd):
                raise IndexBusy(self.holder())
            _write_holder(fd, job_id)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def busy(self) -> bool:
        """True when some thread or process holds the lock now."""
        if self._thread_lock.locked():
            return True
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            # A shared probe: it conflicts only with a holder, never with another probe.
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def holder(self) -> str | None:
        """The job id last written by a holder (meaningful while `busy()`)."""
        try:
            return self._path.read_text().strip() or None
        except OSError:
            return None


def _write_holder(fd: int, job_id: str) -> None:
    """Write the job id into the lock file; on a full disk the lock holds without it."""
    try:
        os.ftruncate(fd, 0)
        os.write(fd, job_id.encode())
    except OSError as error:
        log.warning("could not write the job id into the index lock: %s", error)


def _take_exclusive(fd: int, patience_s: float = 0.5) -> bool:
    """Take the exclusive flock, waiting out a `busy()` probe's brief shared hold.

    A real holder keeps the lock for the whole job, so giving up after `patience_s` is safe."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
