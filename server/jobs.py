"""Indexing jobs started over HTTP, by an upload or by the scheduler: one worker, recent records.

The real single-flight is the core's `IndexLock` (an flock that also covers a `peitu index` in
another process); this manager refuses a second job early, with the running job's id, and keeps
what the API shows: state, progress, counts and errors of the last few jobs.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from index.app import PeiTu
from index.errors import IndexBusy, PeiTuError
from index.indexer import IndexMode
from index.ports import Describer

log = logging.getLogger(__name__)

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
UploadIndexing = Literal["started", "queued", "busy"]


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class JobView:
    """A consistent snapshot of one job, safe to hand to another thread."""

    job_id: str
    mode: IndexMode
    trigger: str  # "api", "upload", "schedule", "follow-up" or "external"
    state: JobState
    phase: str | None
    done: int
    total: int
    counts: dict[str, Any] | None
    errors: tuple[str, ...]
    error: str | None
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES


_DERIVED = frozenset({"errors", "cancel_requested"})


@dataclass
class _Job:
    job_id: str
    mode: IndexMode
    trigger: str
    state: JobState = "queued"
    phase: str | None = None
    done: int = 0
    total: int = 0
    counts: dict[str, Any] | None = None
    errors: list[str] = field(default_factory=list)
    error: str | None = None
    created_at: datetime = field(default_factory=_now)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    redescribe: bool = False
    describer: Describer | None = None  # None: the app's

    def view(self) -> JobView:
        copied = (f.name for f in dataclasses.fields(JobView))
        values = {name: getattr(self, name) for name in copied if name not in _DERIVED}
        return JobView(errors=tuple(self.errors), cancel_requested=self.cancel.is_set(), **values)


JobListener = Callable[[JobView], None]


class JobManager:
    """Runs indexing jobs on one worker thread and remembers the most recent ones."""

    def __init__(
        self,
        app: PeiTu,
        *,
        history: int = 50,
        listener: JobListener | None = None,
        external_poll_s: float = 2.0,
    ):
        self._app = app
        self._listener = listener
        self._lock = threading.Lock()
        self._jobs: deque[_Job] = deque(maxlen=history)
        self._active: _Job | None = None
        self._follow_up = False
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="peitu-index")
        self._external_poll_s = external_poll_s
        self._watcher: threading.Thread | None = None
        self._closing = threading.Event()

    def start(
        self,
        mode: IndexMode = "incremental",
        trigger: str = "api",
        *,
        redescribe: bool = False,
        describer: Describer | None = None,
    ) -> JobView:
        """Queue a job; raises `IndexBusy` with the running job's id if one runs anywhere."""
        with self._lock:
            self._refuse_if_busy()
            job = _Job(
                uuid.uuid4().hex[:12], mode, trigger, redescribe=redescribe, describer=describer
            )
            self._jobs.append(job)
            self._active = job
            self._worker.submit(self._run, job)
            log.info("index job %s (%s, %s) queued", job.job_id, mode, trigger)
            return job.view()

    def start_or_follow(self, trigger: str) -> tuple[UploadIndexing, str | None]:
        """Index new files soon: start a job, or run another one after the job in progress.

        Returns ("started", new id), ("queued", running id) or ("busy", id of a job that runs in
        another process, which this server cannot follow up).
        """
        try:
            return "started", self.start("incremental", trigger).job_id
        except IndexBusy as busy:
            with self._lock:
                if self._active is None:
                    self._watch_external_locked()
                    return "busy", busy.running_job_id
                self._follow_up = True
                return "queued", self._active.job_id

    def _watch_external_locked(self) -> None:
        """Start a follow-up job by itself once the other process's job has ended."""
        if self._watcher is not None and self._watcher.is_alive():
            return
        self._watcher = threading.Thread(
            target=self._follow_external, name="peitu-index-follow", daemon=True
        )
        self._watcher.start()

    def _follow_external(self) -> None:
        while not self._closing.wait(self._external_poll_s):
            try:
                self.start("incremental", "follow-up")
                return
            except IndexBusy:
                with self._lock:
                    if self._active is not None:  # a job of ours runs now: it scans afresh
                        return

    def _refuse_if_busy(self) -> None:
        if self._active is not None:
            raise IndexBusy(self._active.job_id)
        if self._app.lock.busy():
            raise IndexBusy(self._app.lock.holder())

    def get(self, job_id: str) -> JobView | None:
        """This server's job, or a job that a `peitu index` in another process runs now."""
        with self._lock:
            job = next((j for j in self._jobs if j.job_id == job_id), None)
            if job is not None:
                return job.view()
        return self._external(job_id)

    def _external(self, job_id: str) -> JobView | None:
        if not self._app.lock.busy() or self._app.lock.holder() != job_id:
            return None
        return JobView(
            job_id=job_id,
            mode="incremental",
            trigger="external",
            state="running",
            phase=None,
            done=0,
            total=0,
            counts=None,
            errors=(),
            error=None,
            cancel_requested=False,
            created_at=_now(),
            started_at=None,  # another process knows; the lock file holds only the id
            finished_at=None,
        )

    def recent(self) -> list[JobView]:
        """Jobs of this server, newest first."""
        with self._lock:
            return [job.view() for job in reversed(self._jobs)]

    def running(self) -> JobView | None:
        with self._lock:
            return self._active.view() if self._active is not None else None

    def cancel(self, job_id: str) -> JobView | None:
        """Ask a queued or running job to stop at its next checkpoint; None if unknown."""
        with self._lock:
            job = next((j for j in self._jobs if j.job_id == job_id), None)
            if job is None:
                return None
            if job.state not in FINAL_STATES:
                job.cancel.set()
                log.info("index job %s: cancel requested", job_id)
            return job.view()

    def wait(self, job_id: str, timeout: float | None = None) -> JobView | None:
        """Block until the job has finished (or the timeout passed); its latest snapshot."""
        with self._lock:
            job = next((j for j in self._jobs if j.job_id == job_id), None)
        if job is None:
            return None
        job.ended.wait(timeout)
        with self._lock:
            return job.view()

    def shutdown(self, timeout: float = 30.0) -> None:
        """Cancel the running job and wait (up to `timeout`) for the worker to stop."""
        self._closing.set()
        with self._lock:
            self._follow_up = False
            active = self._active
            if active is not None:
                active.cancel.set()
        if active is not None and not active.ended.wait(timeout):
            log.warning("index job %s did not stop within %.0f s", active.job_id, timeout)
        self._worker.shutdown(wait=False, cancel_futures=True)

    # --- the worker ------------------------------------------------------------------------
    def _run(self, job: _Job) -> None:
        self._update(job, state="running", started_at=_now())
        outcome: dict[str, Any] = {"state": "failed", "error": "internal error"}
        try:
            outcome = self._index(job)
        finally:
            self._finish(job, outcome)

    def _index(self, job: _Job) -> dict[str, Any]:
        """Run the job; what it ended as (state, counts, errors, error)."""
        try:
            report = self._app.index(
                job.mode,
                progress=lambda *p: self._progress(job, *p),
                cancel=job.cancel,
                job_id=job.job_id,
                redescribe=job.redescribe,
                describer=job.describer,
            )
        except PeiTuError as error:
            log.warning("index job %s failed: %s", job.job_id, error)
            return {"state": "failed", "error": str(error)}
        except Exception as error:  # a bug: record it and keep the worker alive
            log.exception("index job %s crashed", job.job_id)
            return {"state": "failed", "error": f"internal error: {type(error).__name__}"}
        state: JobState = "cancelled" if report.cancelled else "succeeded"
        log.info("index job %s %s: %s", job.job_id, state, report.to_dict())
        return {"state": state, "counts": report.to_dict(), "errors": list(report.errors)}

    def _progress(self, job: _Job, phase: str, done: int, total: int) -> None:
        self._update(job, phase=phase, done=done, total=total)

    def _update(self, job: _Job, **changes: Any) -> None:
        with self._lock:
            self._update_locked(job, changes)

    def _finish(self, job: _Job, outcome: dict[str, Any]) -> None:
        """Count the job (listener) first, then show it as finished: no reader sees it early."""
        final = {**outcome, "finished_at": _now()}
        with self._lock:
            view = dataclasses.replace(
                job.view(), **{**final, "errors": tuple(final.get("errors", ()))}
            )
        try:
            if self._listener is not None:
                self._listener(view)
        finally:
            with self._lock:
                self._update_locked(job, final)
                self._active = None
                follow_up, self._follow_up = self._follow_up, False
            job.ended.set()
        if follow_up:
            self._start_follow_up()

    @staticmethod
    def _update_locked(job: _Job, changes: dict[str, Any]) -> None:
        for name, value in changes.items():
            setattr(job, name, value)

    def _start_follow_up(self) -> None:
        try:
            self.start("incremental", "follow-up")
        except IndexBusy as busy:
            log.info("follow-up index skipped: job %s is running", busy.running_job_id)
