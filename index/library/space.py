"""Room on the disk of the data folder.

Indexing checks it before each photo it sends to the vision model: a description that cannot be
saved would be paid for again by the next run. When the disk is full the run stops at once with
one line that names the folder and the space it needs (`DiskFull`).

Searching needs no room, but opening the embedded Chroma index writes a row every time (and an
SQLite file in WAL mode needs its shared-memory file): on a disk with no byte free, that fails.
So while there is room, the data folder keeps a small reserve file (`RESERVE_NAME`); a process
that cannot open the stores for lack of space gives it back and tries once more.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from index.errors import DiskFull, is_disk_full

log = logging.getLogger(__name__)
_T = TypeVar("_T")

MB = 1024 * 1024
RESERVE_NAME = ".peitu-space-reserve"
RESERVE_BYTES = 2 * MB  # Chroma's open writes a journal of a few pages, SQLite's WAL 32 KB


def free_bytes(folder: Path) -> int:
    """Bytes an unprivileged writer may still use on the disk of `folder`."""
    return shutil.disk_usage(folder).free


@dataclass(frozen=True)
class DiskSpace:
    """The data folder and the free space an indexing run must leave (`min_free_bytes`, and
    room for the reserve file while it is missing)."""

    folder: Path
    min_free_bytes: int
    free: Callable[[Path], int] = field(default=free_bytes, compare=False)

    def needed(self) -> int:
        """Bytes that must be free for indexing to go on."""
        missing = 0 if (self.folder / RESERVE_NAME).exists() else RESERVE_BYTES
        return self.min_free_bytes + missing

    def check(self) -> None:
        """Raise `DiskFull` while fewer than `needed()` bytes are free."""
        if self.free(self.folder) < self.needed():
            raise self.full()

    def full(self) -> DiskFull:
        """The one line a person reads when indexing stops for lack of space."""
        left, needed = self.free(self.folder), self.needed()
        return DiskFull(
            f"数据目录 {self.folder} 所在的磁盘空间不足（只剩 {_mb(left)}，索引至少要留 "
            f"{_mb(needed)}）：请再腾出至少 {_mb(max(needed - left, MB))} 后重新运行 "
            "peitu index，已经描述过的照片不会再描述一次。"
        )

    def keep_reserve(self) -> None:
        """Put the reserve file in place when it is missing and there is room for it."""
        if self.free(self.folder) >= self.needed():
            write_reserve(self.folder)

    def save_paid_work(self, save: Callable[[], None]) -> None:
        """`save()` something a model was paid for (a description). When the disk is full, it
        is saved in the reserve's room instead, and then `DiskFull` is raised all the same:
        indexing must stop, but the next run need not pay for it again."""
        try:
            save()
            return
        except DiskFull:
            release_reserve(self.folder)  # unless another photo's save gave it back just now
        save()  # in the reserve's room; a DiskFull here is raised as it is
        raise self.full()


def write_reserve(folder: Path) -> None:
    """Write the reserve file (`RESERVE_BYTES` really allocated) if it is missing."""
    reserve = folder / RESERVE_NAME
    if reserve.exists():
        return
    try:
        with open(reserve, "wb") as out:
            out.write(bytes(RESERVE_BYTES))
            out.flush()
            os.fsync(out.fileno())
    except OSError as error:
        reserve.unlink(missing_ok=True)
        log.info("no reserve file in %s (%s)", folder, error)


def release_reserve(folder: Path) -> bool:
    """Give the reserve file's space back; whether there was one."""
    reserve = folder / RESERVE_NAME
    try:
        size = reserve.stat().st_size
        reserve.unlink()
    except FileNotFoundError:
        return False
    log.warning(
        "the disk of %s is full: gave back the %s kept in reserve so that searching still "
        "works; free some space, then run peitu index again",
        folder,
        _mb(size),
    )
    return True


def opened_on_full_disk(folder: Path, open_stores: Callable[[], _T]) -> _T:
    """`open_stores()`; when that fails for lack of space, once more after giving the reserve
    back. Raises `DiskFull` with a line for a person when even that is not enough."""
    try:
        return open_stores()
    except Exception as error:
        if not is_disk_full(error):
            raise
        if not release_reserve(folder):
            raise _cannot_open(folder) from error
    try:
        return open_stores()
    except Exception as error:
        if is_disk_full(error):
            raise _cannot_open(folder) from error
        raise


def _cannot_open(folder: Path) -> DiskFull:
    return DiskFull(
        f"数据目录 {folder} 所在的磁盘已满，连打开索引也需要一点空间：请腾出几 MB 后再试。"
    )


def _mb(size: int) -> str:
    return f"{max(size, 0) / MB:.1f} MB"
