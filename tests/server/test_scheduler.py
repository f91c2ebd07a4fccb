"""The periodic indexer: never two runs at once, skips logged and counted, failures survived."""

from __future__ import annotations

import logging

import httpx
import pytest

from config.settings import IndexingSettings
from server.scheduler import ScheduleInvalid, schedule_triggers
from tests.server.conftest import Served, ServerFactory, metric, vision_settings, wait_for
from tests.support.core_fixtures import SettingsFactory, SmallLibrary
from tests.support.openai_server import FakeOpenAIServer

HOURLY = {"schedule_minutes": 60}  # fires only when a test says so (`trigger_now`)


def _jobs(client: httpx.Client) -> list[dict[str, object]]:
    jobs: list[dict[str, object]] = client.get("/api/index/jobs").json()["jobs"]
    return jobs


def _skipped(client: httpx.Client) -> float:
    return metric(client.get("/metrics").text, "peitu_index_schedule_skipped_total") or 0


@pytest.fixture
def slow_server(
    start_server: ServerFactory,
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    openai_server: FakeOpenAIServer,
) -> Served:
    """Scheduled hourly; each run describes 30 photos at 0.1 s a call, 4 at a time."""
    openai_server.set_mode("vision", delay_s=0.1)
    settings = make_settings(
        library=small_library.root, vision=vision_settings(openai_server), indexing=HOURLY
    )
    return start_server(settings)


def test_two_overlapping_triggers_run_one_job(
    slow_server: Served, openai_server: FakeOpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="server.scheduler")
    scheduler = slow_server.ctx.scheduler
    with slow_server.client() as client:
        assert client.get("/api/status").json()["next_scheduled_index_at"] is not None
        scheduler.trigger_now()
        wait_for(lambda: slow_server.ctx.jobs.running() is not None, "the scheduled job")
        scheduler.trigger_now()  # the first run is still going
        wait_for(lambda: _skipped(client) == 1, "the second trigger to be skipped")
        (job,) = _jobs(client)
        finished = slow_server.wait_job(client, str(job["job_id"]))
    assert finished["trigger"] == "schedule" and finished["state"] == "succeeded"
    assert openai_server.calls["vision"] == 30  # described once
    assert "scheduled index skipped: the previous scheduled run is still going" in caplog.text


def test_the_interval_and_the_cron_trigger_firing_together_run_one_job(
    start_server: ServerFactory,
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    openai_server: FakeOpenAIServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="server.scheduler")
    openai_server.set_mode("vision", delay_s=0.1)
    both = {"schedule_minutes": 60, "schedule_cron": "0 3 * * *"}
    settings = make_settings(
        library=small_library.root, vision=vision_settings(openai_server), indexing=both
    )
    served = start_server(settings)
    scheduler = served.ctx.scheduler
    with served.client() as client:
        scheduler.trigger_now("interval")
        wait_for(lambda: served.ctx.jobs.running() is not None, "the interval's job")
        running = served.ctx.jobs.running()
        assert running is not None
        scheduler.trigger_now("cron")  # its own first run, while the interval's job goes on
        wait_for(lambda: _skipped(client) == 1, "the cron trigger to be skipped")
        (job,) = _jobs(client)
        finished = served.wait_job(client, str(job["job_id"]))
    assert finished["state"] == "succeeded" and openai_server.calls["vision"] == 30
    assert f"scheduled index skipped: job {running.job_id} is running" in caplog.text


def test_a_trigger_during_an_api_job_is_skipped_not_an_error(
    slow_server: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="server.scheduler")
    with slow_server.client() as client:
        api_job = client.post("/api/index/jobs").json()["job_id"]
        slow_server.ctx.scheduler.trigger_now()
        wait_for(lambda: _skipped(client) == 1, "the trigger to be skipped")
        slow_server.wait_job(client, api_job)
        jobs = _jobs(client)
    assert [(j["job_id"], j["trigger"]) for j in jobs] == [(api_job, "api")]
    assert f"scheduled index skipped: job {api_job} is running" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_the_schedule_survives_a_failed_run(
    start_server: ServerFactory, make_settings: SettingsFactory, small_library: SmallLibrary
) -> None:
    settings = make_settings(library=small_library.root, indexing=HOURLY)
    served = start_server(settings, descriptions=small_library.descriptions)
    hidden = small_library.root.with_name("elsewhere")
    small_library.root.rename(hidden)  # the disk is not mounted: the run fails
    with served.client() as client:
        served.ctx.scheduler.trigger_now()
        wait_for(lambda: [j["state"] for j in _jobs(client)] == ["failed"], "the failed run")
        wait_for(lambda: served.ctx.scheduler.runs_ended == 1, "the failed run to return")
        hidden.rename(small_library.root)
        served.ctx.scheduler.trigger_now()
        wait_for(lambda: len(_jobs(client)) == 2, "the next scheduled run")
        second = served.wait_job(client, str(_jobs(client)[0]["job_id"]))
        metrics = client.get("/metrics").text
    assert second["state"] == "succeeded" and second["counts"]["embedded"] == 30
    assert metric(metrics, "peitu_index_jobs_total", trigger="schedule", state="failed") == 1
    assert metric(metrics, "peitu_index_jobs_total", trigger="schedule", state="succeeded") == 1


def test_interval_and_cron_triggers_from_settings() -> None:
    assert schedule_triggers(IndexingSettings()) == {}
    both = schedule_triggers(IndexingSettings(schedule_minutes=30, schedule_cron="0 3 * * *"))
    assert sorted(both) == ["cron", "interval"]
    with pytest.raises(ScheduleInvalid, match="PEITU_INDEXING__SCHEDULE_CRON"):
        schedule_triggers(IndexingSettings(schedule_cron="every night"))
