"""One indexing job at a time, across threads and processes (CLI, server, scheduler).

An exclusive `flock` on a file in the data folder; the kernel drops it when the holder dies,
so a crashed run never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from index.errors import IndexBusy


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
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise IndexBusy(self.holder()) from None
            os.ftruncate(fd, 0)
            os.write(fd, job_id.encode())
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def busy(self) -> bool:
        """True when some thread or process holds the lock now."""
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return self._thread_lock.locked()

    def holder(self) -> str | None:
        """The job id last written by a holder (meaningful while `busy()`)."""
        try:
            return self._path.read_text().strip() or None
        except OSError:
            return None
