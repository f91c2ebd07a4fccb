"""Opening the data folder's SQLite files (the catalog, the HNSW store's rows) in WAL mode.

Several processes open them at once (`peitu serve` with its scheduled job, a cron'd
`peitu index`, the bot). Turning a new file to WAL needs a lock SQLite does not wait for (it
answers "database is locked" at once, whatever the busy timeout), so the switch is tried again
until the timeout; any other error, and a disk with no room, are raised as they are.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Literal

_RETRY_S = 0.02


def open_wal(
    path: Path, *, timeout_s: float, isolation_level: Literal["DEFERRED"] | None = "DEFERRED"
) -> sqlite3.Connection:
    """A connection to `path` in WAL mode with `synchronous=NORMAL`, shareable by threads;
    `isolation_level` None: autocommit, the caller begins its transactions itself."""
    db = sqlite3.connect(
        path, timeout=timeout_s, isolation_level=isolation_level, check_same_thread=False
    )
    try:
        _use_wal(db, time.monotonic() + timeout_s)
        db.execute("PRAGMA synchronous=NORMAL")
    except BaseException:
        db.close()
        raise
    return db


def _use_wal(db: sqlite3.Connection, deadline: float) -> None:
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL").fetchone()
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(_RETRY_S)
