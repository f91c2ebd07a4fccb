"""Periodic incremental indexing: every `schedule_minutes` and/or at `schedule_cron`.

Runs go through the same `JobManager` (and so the same index lock) as API jobs: a trigger that
fires while any job runs, here or in a `peitu index` elsewhere, is skipped and logged. A run
that fails is recorded like any job; the schedule goes on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from datetime import datetime

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MAX_INSTANCES,
    JobEvent,
    JobSubmissionEvent,
)
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from config.settings import IndexingSettings
from index.errors import IndexBusy, PeiTuError
from server.jobs import JobManager

log = logging.getLogger(__name__)

_MISFIRE_GRACE_S = 300


class ScheduleInvalid(ValueError):
    """The schedule settings cannot be turned into triggers; the message names the setting."""


def schedule_triggers(indexing: IndexingSettings) -> dict[str, BaseTrigger]:
    """The configured triggers by name ("interval", "cron"); empty when indexing is manual."""
    triggers: dict[str, BaseTrigger] = {}
    if indexing.schedule_minutes > 0:
        triggers["interval"] = IntervalTrigger(minutes=indexing.schedule_minutes)
    cron = indexing.schedule_cron.strip()
    if cron:
        try:
            triggers["cron"] = CronTrigger.from_crontab(cron)
        except ValueError as error:
            raise ScheduleInvalid(
                f"invalid setting indexing.schedule_cron (PEITU_INDEXING__SCHEDULE_CRON): "
                f"{cron!r} is not a crontab expression like '0 3 * * *' ({error})"
            ) from None
    return triggers


class IndexScheduler:
    """An APScheduler `BackgroundScheduler` that starts incremental jobs on the manager."""

    def __init__(
        self,
        jobs: JobManager,
        triggers: Mapping[str, BaseTrigger],
        on_skip: Callable[[], None] | None = None,
    ) -> None:
        self._jobs = jobs
        self._triggers = dict(triggers)
        self._on_skip = on_skip
        self._scheduler = BackgroundScheduler()
        self._runs_ended = 0
        self._runs_lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self._triggers)

    @property
    def runs_ended(self) -> int:
        """Scheduled runs that have returned, skipped ones included.

        APScheduler counts a run as over (so the same trigger may fire again) only after
        `run_once` has returned, a moment after its job is seen as finished.
        """
        with self._runs_lock:
            return self._runs_ended

    def start(self) -> None:
        """Start the triggers (a no-op when none is configured)."""
        if not self._triggers:
            log.info("scheduled indexing is off (PEITU_INDEXING__SCHEDULE_MINUTES / _CRON)")
            return
        for name, trigger in self._triggers.items():
            self._scheduler.add_job(
                self.run_once,
                trigger,
                id=name,
                name=f"incremental index ({name})",
                max_instances=1,  # never overlaps itself ...
                coalesce=True,  # ... nor catches up on missed runs one by one
                misfire_grace_time=_MISFIRE_GRACE_S,
            )
        self._scheduler.add_listener(self._skipped_by_scheduler, EVENT_JOB_MAX_INSTANCES)
        self._scheduler.add_listener(self._run_ended, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
        self._scheduler.start()
        log.info("scheduled indexing: %s", ", ".join(f"{n} {t}" for n, t in self._triggers.items()))

    def shutdown(self) -> None:
        """Stop firing; a run in progress is cancelled by the job manager's own shutdown."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def run_once(self) -> None:
        """One scheduled run: start an incremental job and wait for it to end."""
        try:
            job = self._jobs.start("incremental", trigger="schedule")
        except IndexBusy as busy:
            self._skip(f"job {busy.running_job_id} is running")
            return
        except PeiTuError as error:  # never let a failure stop the schedule
            log.warning("scheduled index could not start: %s", error)
            return
        finished = self._jobs.wait(job.job_id)
        if finished is not None:
            log.info("scheduled index job %s %s", job.job_id, finished.state)

    def trigger_now(self, name: str | None = None) -> None:
        """Make a trigger fire at once (as if its time had come); the first one by default."""
        job_name = name or next(iter(self._triggers))
        self._scheduler.modify_job(job_name, next_run_time=datetime.now(self._scheduler.timezone))

    def next_run_at(self) -> datetime | None:
        """When the next scheduled run is due, if any trigger is configured and running."""
        if not self._scheduler.running:
            return None
        times = [job.next_run_time for job in self._scheduler.get_jobs() if job.next_run_time]
        return min(times, default=None)

    def _run_ended(self, event: JobEvent) -> None:
        with self._runs_lock:
            self._runs_ended += 1

    def _skipped_by_scheduler(self, event: JobSubmissionEvent) -> None:
        self._skip("the previous scheduled run is still going")

    def _skip(self, why: str) -> None:
        log.info("scheduled index skipped: %s", why)
        if self._on_skip is not None:
            self._on_skip()
