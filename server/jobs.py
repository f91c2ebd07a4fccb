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

from index.error_words import words_for
from index.errors import IndexBusy, PeiTuError
from index.indexing.indexer import IndexMode
from index.indexing.journal import JobJournal
from index.models import IndexReport
from index.ports import Describer
from server.messages import INTERNAL
from server.ports import IndexRunner

log = logging.getLogger(__name__)

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
UploadIndexing = Literal["started", "queued", "busy"]
JobKind = Literal["incremental", "rebuild", "upload", "scheduled", "cli", "follow-up"]
_KIND_OF_TRIGGER: dict[str, JobKind] = {
    "upload": "upload",
    "schedule": "scheduled",
    "external": "cli",
    "cli": "cli",
    "follow-up": "follow-up",
}
HISTORY_SHOWN = 20


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
    phase_started_at: datetime | None = None
    error_message: str | None = None  # `error` in Chinese, for a person

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def kind(self) -> JobKind:
        """What started the job, as a person names it: a rebuild, an upload, the CLI, ..."""
        if self.mode == "rebuild":
            return "rebuild"
        return _KIND_OF_TRIGGER.get(self.trigger, "incremental")

    @property
    def elapsed_s(self) -> float | None:
        if self.started_at is None:
            return None
        return max(0.0, ((self.finished_at or _now()) - self.started_at).total_seconds())

    @property
    def rate_per_s(self) -> float | None:
        """Photos per second in the current (or, once finished, the last) phase."""
        if self.phase_started_at is None or self.done <= 0:
            return None
        seconds = ((self.finished_at or _now()) - self.phase_started_at).total_seconds()
        return self.done / seconds if seconds > 0 else None

    @property
    def eta_s(self) -> float | None:
        """Seconds until the whole job is done: what is left of the current phase at its speed,
        plus the phases still to come for as many photos (at `LATER_PHASE_S`); None when
        unknown (the scan, which does not know yet how many photos there are to do)."""
        rate = self.rate_per_s
        if self.finished or rate is None or self.total <= 0 or self.phase == "scan":
            return None
        later = sum(seconds for _, seconds in LATER_PHASE_S.get(self.phase or "", ()))
        return max(0, self.total - self.done) / rate + later * self.total


# Seconds a photo takes in the phases after the current one, for the job's time left. Measured
# on the shared 2-core machine (docs/reference.md, Similar photos): the visual pass 101 ms a photo
# at load 7.7 (270 ms at load 9 in 1,000 offline-described photos);
# the embed phase only embeds what the describing left (batches of 16, a few ms a photo).
LATER_PHASE_S: dict[str, tuple[tuple[str, float], ...]] = {
    "describe": (("embed", 0.01), ("visual", 0.1)),
    "embed": (("visual", 0.1),),
}


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
    phase_started_at: datetime | None = None
    error_message: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    redescribe: bool = False
    describer: Describer | None = None  # None: the core's own

    def view(self) -> JobView:
        copied = (f.name for f in dataclasses.fields(JobView))
        values = {name: getattr(self, name) for name in copied if name not in _DERIVED}
        return JobView(errors=tuple(self.errors), cancel_requested=self.cancel.is_set(), **values)


JobListener = Callable[[JobView], None]


class JobManager:
    """Runs indexing jobs on one worker thread and remembers the most recent ones."""

    def __init__(
        self,
        core: IndexRunner,
        *,
        history: int = 50,
        listener: JobListener | None = None,
        external_poll_s: float = 2.0,
        journal: JobJournal | None = None,
    ):
        self._core = core
        self._listener = listener
        self._journal = journal
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
        elsewhere = self._core.running_job()
        if elsewhere is not None:
            raise IndexBusy(elsewhere.job_id)

    def get(self, job_id: str) -> JobView | None:
        """This server's job, or a job that a `peitu index` in another process runs now."""
        with self._lock:
            job = next((j for j in self._jobs if j.job_id == job_id), None)
            if job is not None:
                return job.view()
        return self._external(job_id)

    def _external(self, job_id: str) -> JobView | None:
        running = self._core.running_job()
        if running is None or running.job_id != job_id:
            return None
        record = self._journal.current() if self._journal is not None else None
        if record is not None and record.get("job_id") == job_id:
            return _view_of_record(record)
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
        """The last `HISTORY_SHOWN` jobs, newest first: this server's, the CLI's and those of
        earlier runs of the server (from the journal)."""
        with self._lock:
            ours = [job.view() for job in reversed(self._jobs)]
        others = self._journal_views({job.job_id for job in ours})
        merged = sorted(ours + others, key=lambda job: job.created_at, reverse=True)
        return merged[:HISTORY_SHOWN]

    def _journal_views(self, known: set[str]) -> list[JobView]:
        if self._journal is None:
            return []
        records = self._journal.history()
        running = self._core.running_job()
        holder = running.job_id if running is not None else None
        current = self._journal.current()
        if current is not None and current.get("job_id") == holder:
            records.insert(0, current)
        views = []
        for record in records:
            if record.get("job_id") in known:
                continue
            try:
                views.append(_view_of_record(record))
            except (KeyError, TypeError, ValueError):
                continue  # a line from another version; not worth failing the list over
            known.add(str(record["job_id"]))
        return views

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
        started = _now()
        self._update(job, state="running", started_at=started, phase_started_at=started)
        outcome: dict[str, Any] = {"state": "failed", "error": "internal error"}
        try:
            outcome = self._index(job)
        finally:
            self._finish(job, outcome)

    def _index(self, job: _Job) -> dict[str, Any]:
        """Run the job; what it ended as (state, counts, errors, error)."""
        try:
            report = self._core.index(
                job.mode,
                progress=lambda *p: self._progress(job, *p),
                cancel=job.cancel,
                job_id=job.job_id,
                redescribe=job.redescribe,
                describer=job.describer,
            )
        except PeiTuError as error:
            log.warning("index job %s failed: %s", job.job_id, error)
            return {
                "state": "failed",
                "error": str(error),
                "error_message": words_for(error).page,
            }
        except Exception as error:  # a bug: record it and keep the worker alive
            log.exception("index job %s crashed", job.job_id)
            failed = f"internal error: {type(error).__name__}"
            return {"state": "failed", "error": failed, "error_message": INTERNAL}
        state: JobState = "cancelled" if report.cancelled else "succeeded"
        log.info("index job %s %s: %s", job.job_id, state, report.to_dict())
        return {"state": state, "counts": report.to_dict(), "errors": list(report.errors)}

    def _progress(self, job: _Job, phase: str, done: int, total: int) -> None:
        with self._lock:
            changes: dict[str, Any] = {"phase": phase, "done": done, "total": total}
            if phase != job.phase:
                changes["phase_started_at"] = _now()
            self._update_locked(job, changes)

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
            if self._journal is not None:
                self._journal.append(_record_of_view(view))
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


def _record_of_view(view: JobView) -> dict[str, Any]:
    """A finished job as one line of the journal's history."""
    record = dataclasses.asdict(view)
    record["errors"] = list(view.errors)[:20]
    for name in ("created_at", "started_at", "finished_at", "phase_started_at"):
        moment = record[name]
        record[name] = moment.isoformat() if moment is not None else None
    return record


# The counts every record has (`dates_ignored` came later: a record without it is complete).
_COUNT_KEYS = frozenset(IndexReport().to_dict()) - {"dates_ignored"}


def _complete_counts(counts: object) -> dict[str, Any] | None:
    """The counts of a journal record when they have every field (else an older format)."""
    if isinstance(counts, dict) and counts.keys() >= _COUNT_KEYS:
        return counts
    return None


def _view_of_record(record: dict[str, Any]) -> JobView:
    """A job from the journal (another process, or an earlier run of this server)."""

    def moment(name: str) -> datetime | None:
        value = record.get(name)
        if not isinstance(value, str):
            return None
        parsed = datetime.fromisoformat(value)
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)

    created = moment("created_at") or moment("started_at") or _now()
    state = record.get("state", "running")
    return JobView(
        job_id=str(record["job_id"]),
        mode="rebuild" if record.get("mode") == "rebuild" else "incremental",
        trigger=str(record.get("trigger", "cli")),
        state=state if state in ("queued", "running", *FINAL_STATES) else "failed",
        phase=record.get("phase"),
        done=int(record.get("done") or 0),
        total=int(record.get("total") or 0),
        counts=_complete_counts(record.get("counts")),
        errors=tuple(str(e) for e in record.get("errors") or ()),
        error=record.get("error"),
        cancel_requested=bool(record.get("cancel_requested", False)),
        created_at=created,
        started_at=moment("started_at"),
        finished_at=moment("finished_at"),
        phase_started_at=moment("phase_started_at"),
        error_message=record.get("error_message"),
    )
