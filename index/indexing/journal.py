"""What indexing jobs did and are doing, in the data folder, for every process to read.

A `peitu index` in the CLI writes its progress to `index-progress.json` while it holds the
index lock, so a server in another process can show it live; every finished job (CLI or
server) is appended to `index-history.jsonl`, the last `HISTORY_KEPT` of which are kept.
Plain JSON files written whole and swapped in with `os.replace`: a reader never sees half of
one, and a crashed writer leaves at worst a stale progress file that the lock check ignores.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

HISTORY_KEPT = 50
_MIN_WRITE_INTERVAL_S = 0.25


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


class JobJournal:
    """Progress of the job this process runs, and the history of finished jobs."""

    def __init__(self, data_dir: Path) -> None:
        self._progress = data_dir / "index-progress.json"
        self._history = data_dir / "index-history.jsonl"
        self._lock = threading.Lock()
        self._record: dict[str, Any] = {}
        self._written_at = 0.0

    # --- the writer (the process that runs the job) ------------------------------------------
    def start(self, job_id: str, mode: str, trigger: str) -> None:
        """Record a job that starts now (call it while holding the index lock)."""
        with self._lock:
            started = now_iso()
            self._record = {
                "job_id": job_id,
                "mode": mode,
                "trigger": trigger,
                "state": "running",
                "phase": None,
                "done": 0,
                "total": 0,
                "created_at": started,
                "started_at": started,
                "phase_started_at": started,
                "pid": os.getpid(),
            }
            self._write_progress(force=True)

    def progress(self, phase: str, done: int, total: int) -> None:
        """The progress callback: written at most every quarter second, and at phase ends."""
        with self._lock:
            if not self._record:
                return
            if phase != self._record["phase"]:
                self._record["phase_started_at"] = now_iso()
            self._record.update(phase=phase, done=done, total=total)
            self._write_progress(force=done >= total)

    def finish(self, state: str, counts: dict[str, Any] | None, error: str | None) -> None:
        """Move the job from the progress file into the history."""
        with self._lock:
            if not self._record:
                return
            record = {**self._record, "state": state, "counts": counts, "error": error}
            record["finished_at"] = now_iso()
            record.pop("pid", None)
            self._record = {}
            self.append(record)
            self._progress.unlink(missing_ok=True)

    def _write_progress(self, *, force: bool) -> None:
        moment = time.monotonic()
        if not force and moment - self._written_at < _MIN_WRITE_INTERVAL_S:
            return
        self._written_at = moment
        try:
            _write_atomically(self._progress, json.dumps(self._record, ensure_ascii=False))
        except OSError as error:  # a full disk: the job goes on (and says so), unseen by others
            log.warning("could not write the job's progress: %s", error)

    def append(self, record: dict[str, Any]) -> None:
        """Add a finished job to the history, keeping the last `HISTORY_KEPT`."""
        lines = [json.dumps(r, ensure_ascii=False) for r in self.history()[::-1]]
        lines = [*lines, json.dumps(record, ensure_ascii=False, default=str)][-HISTORY_KEPT:]
        try:
            _write_atomically(self._history, "\n".join(lines) + "\n")
        except OSError as error:  # history is a convenience; never fail a job over it
            log.warning("could not write the job history: %s", error)

    # --- readers ---------------------------------------------------------------------------
    def current(self) -> dict[str, Any] | None:
        """The running job's record as its process last wrote it (check the lock too)."""
        return _read_json(self._progress)

    def history(self) -> list[dict[str, Any]]:
        """Finished jobs, newest first."""
        try:
            text = self._history.read_text(encoding="utf-8")
        except OSError:
            return []
        records = []
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and "job_id" in record:
                records.append(record)
        return records[::-1]


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)  # a write cut short (a full disk) leaves nothing
