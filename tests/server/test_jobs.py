"""Indexing jobs over real HTTP: progress and counts, single flight (409), cancel, errors."""

from __future__ import annotations

import httpx
import pytest

from tests.server.conftest import ServerFactory, metric, vision_settings, wait_for
from tests.support.core_fixtures import SettingsFactory, SmallLibrary
from tests.support.openai_server import FakeOpenAIServer

ALL_NEW = {
    "scanned": 30, "new": 30, "unchanged": 0, "moved": 0, "removed": 0,
    "described": 30, "embedded": 30, "failed": 0, "visual_embedded": 30, "visual_failed": 0,
    "dates_ignored": 0, "skipped": {},
}  # fmt: skip


def test_job_progress_reaches_done_with_the_index_counts(
    start_server: ServerFactory, make_settings: SettingsFactory, small_library: SmallLibrary
) -> None:
    settings = make_settings(library=small_library.root, admin_token="t" * 32)
    served = start_server(settings, descriptions=small_library.descriptions)
    with served.client() as client:
        created = client.post("/api/index/jobs", json={"mode": "incremental"})
        assert created.status_code == 202
        job_id = created.json()["job_id"]
        assert created.headers["location"] == f"/api/index/jobs/{job_id}"
        job = served.wait_job(client, job_id)
        listing = client.get("/api/index/jobs").json()["jobs"]
        found = client.post("/api/recommend", json={"text": small_library.photos[3].captions[4]})
    assert job["state"] == "succeeded" and job["error"] is None and job["errors"] == []
    assert job["counts"] == ALL_NEW
    assert job["progress"] == {"phase": "visual", "done": 30, "total": 30}  # the last phase
    assert job["trigger"] == "api" and job["mode"] == "incremental"
    assert job["started_at"] <= job["finished_at"]
    assert [j["job_id"] for j in listing] == [job_id]
    assert small_library.photos[3].rel_path in [r["path"] for r in found.json()["results"]]


def test_a_second_job_gets_409_with_the_running_jobs_id(
    start_server: ServerFactory,
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    openai_server: FakeOpenAIServer,
) -> None:
    openai_server.set_mode("vision", delay_s=0.2)  # 30 photos, 4 at a time: about 1.5 s
    settings = make_settings(library=small_library.root, vision=vision_settings(openai_server))
    served = start_server(settings)
    with served.client() as client:
        first = client.post("/api/index/jobs", json={"mode": "incremental"}).json()["job_id"]
        second = client.post("/api/index/jobs", json={"mode": "rebuild"})
        no_body = client.post("/api/index/jobs")
        status = client.get("/api/status").json()
        job = served.wait_job(client, first)
        after = client.post("/api/index/jobs")
        served.wait_job(client, after.json()["job_id"])
    assert second.status_code == no_body.status_code == 409
    assert second.json()["job_id"] == no_body.json()["job_id"] == first
    assert first in second.json()["detail"]
    assert status["indexing"] is True and status["running_job_id"] == first
    assert job["state"] == "succeeded" and job["counts"]["described"] == 30
    assert openai_server.calls["vision"] == 30  # the refused requests described nothing
    assert after.status_code == 202


def test_cancel_stops_a_running_job_and_the_next_run_finishes_it(
    start_server: ServerFactory,
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    openai_server: FakeOpenAIServer,
) -> None:
    openai_server.set_mode("vision", delay_s=0.15)
    vision = vision_settings(openai_server, concurrency=2)
    served = start_server(make_settings(library=small_library.root, vision=vision))
    with served.client() as client:
        job_id = client.post("/api/index/jobs").json()["job_id"]
        wait_for(lambda: _described(client, job_id) >= 4, "some descriptions")
        cancelled = client.post(f"/api/index/jobs/{job_id}/cancel")
        job = served.wait_job(client, job_id)
        searchable = client.get("/api/status").json()["photos"]
        again = client.post(f"/api/index/jobs/{job_id}/cancel")
        unknown = client.post("/api/index/jobs/nope/cancel")
        rerun = served.wait_job(client, client.post("/api/index/jobs").json()["job_id"])
    assert cancelled.status_code == 202 and cancelled.json()["cancel_requested"] is True
    assert job["state"] == "cancelled"
    described = job["counts"]["described"]
    # what was described before the cancel is embedded: searchable at once
    assert 4 <= described < 30 and job["counts"]["embedded"] == described == searchable
    assert again.status_code == 409 and "already finished (cancelled)" in again.json()["detail"]
    assert unknown.status_code == 404
    assert rerun["state"] == "succeeded"
    assert rerun["counts"]["described"] == rerun["counts"]["embedded"] == 30 - described
    assert openai_server.calls["vision"] == 30  # nothing described twice


def _described(client: httpx.Client, job_id: str) -> int:
    progress = client.get(f"/api/index/jobs/{job_id}").json()["progress"]
    return int(progress["done"]) if progress["phase"] == "describe" else 0


def test_a_failed_job_reports_why(
    start_server: ServerFactory, make_settings: SettingsFactory, small_library: SmallLibrary
) -> None:
    settings = make_settings(library=small_library.root / "missing")
    served = start_server(settings, descriptions=small_library.descriptions)
    with served.client() as client:
        job = served.wait_job(client, client.post("/api/index/jobs").json()["job_id"])
        metrics = client.get("/metrics").text
        unknown = client.get("/api/index/jobs/0123456789ab")
    assert job["state"] == "failed" and job["counts"] is None
    assert "missing" in job["error"]
    assert metric(metrics, "peitu_index_jobs_total", trigger="api", state="failed") == 1
    assert unknown.status_code == 404


def test_rebuild_reembeds_from_stored_descriptions(
    start_server: ServerFactory, make_settings: SettingsFactory, small_library: SmallLibrary
) -> None:
    settings = make_settings(library=small_library.root)
    served = start_server(settings, descriptions=small_library.descriptions)
    with served.client() as client:
        served.wait_job(client, client.post("/api/index/jobs").json()["job_id"])
        rebuild = client.post("/api/index/jobs", json={"mode": "rebuild"}).json()["job_id"]
        job = served.wait_job(client, rebuild)
        metrics = client.get("/metrics").text
    assert job["mode"] == "rebuild" and job["state"] == "succeeded"
    assert (job["counts"]["described"], job["counts"]["embedded"]) == (0, 30)
    assert metric(metrics, "peitu_index_jobs_total", trigger="api", state="succeeded") == 2
    assert metric(metrics, "peitu_index_photos_total", outcome="embedded") == 60
    assert metric(metrics, "peitu_photos_indexed") == 30


@pytest.mark.parametrize("body", [{"mode": "everything"}, {"mode": 3}])
def test_unknown_mode_is_422(
    start_server: ServerFactory, make_settings: SettingsFactory, body: dict[str, object]
) -> None:
    served = start_server(make_settings())
    with served.client() as client:
        response = client.post("/api/index/jobs", json=body)
    assert response.status_code == 422 and "mode" in response.json()["detail"]


def test_a_job_with_redescribe_replaces_imported_captions_on_purpose(
    start_server: ServerFactory,
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    openai_server: FakeOpenAIServer,
) -> None:
    vision = vision_settings(openai_server)
    settings = make_settings(library=small_library.root, vision=vision)
    served = start_server(settings, descriptions=small_library.descriptions)
    with served.client() as client:
        served.wait_job(client, client.post("/api/index/jobs").json()["job_id"])
        photo_id = next(iter(served.app.catalog.photo_ids()))
        before = client.get(f"/api/photos/{photo_id}").json()
        plain = client.post("/api/index/jobs", json={"describer": "vision"}).json()["job_id"]
        plain_job = served.wait_job(client, plain)
        calls_after_plain = openai_server.calls["vision"]
        body = {"redescribe": True, "describer": "vision"}
        again = served.wait_job(client, client.post("/api/index/jobs", json=body).json()["job_id"])
        after = client.get(f"/api/photos/{photo_id}").json()
        status = client.get("/api/status").json()
    assert before["describer_tier"] == "imported" and before["describer"].startswith("sidecar:")
    assert plain_job["counts"]["described"] == 0 and calls_after_plain == 0
    assert again["counts"]["described"] == 30 and openai_server.calls["vision"] == 30
    assert after["describer_tier"] == "vision" and after["describer"].startswith("fake-vl@")
    assert status["tiers"] == {"vision": 30}
