"""The jobs view over HTTP: type, times, speed, ETA, the last 20 jobs across processes, and
Chinese messages beside the English detail of every error body."""

from __future__ import annotations

import re

from index.errors import (
    IndexBusy,
    IndexMismatch,
    InvalidQuery,
    LibraryNotFound,
    ModelUnavailable,
    PeiTuError,
    PhotoUnreadable,
)
from index.indexing.journal import HISTORY_KEPT, JobJournal
from index.models import IndexReport
from server.errors import error_body
from server.jobs import LATER_PHASE_S, JobView
from tests.server.conftest import ServerFactory
from tests.support.core_fixtures import SettingsFactory, SmallLibrary


def test_a_job_of_another_process_is_shown_with_its_progress_and_then_in_the_history(
    start_server: ServerFactory, make_settings: SettingsFactory, small_library: SmallLibrary
) -> None:
    settings = make_settings(library=small_library.root)
    served = start_server(settings, descriptions=small_library.descriptions)
    other = JobJournal(settings.data_dir)  # what `peitu index` writes in its own process
    with served.client() as client:
        with served.app.lock.hold("cli-0001"):
            other.start("cli-0001", "incremental", "external")
            other.progress("describe", 0, 40)
            other.progress("describe", 40, 40)  # a phase end is always written
            other.progress("embed", 10, 40)
            other.progress("embed", 40, 40)
            live = client.get("/api/index/jobs/cli-0001").json()
            status = client.get("/api/status").json()
            listing = client.get("/api/index/jobs").json()["jobs"]
            other.finish("succeeded", IndexReport(scanned=40, new=40).to_dict(), None)
        after = client.get("/api/index/jobs").json()["jobs"]
        gone = client.get("/api/index/jobs/cli-0001")
    assert (live["kind"], live["state"], live["trigger"]) == ("cli", "running", "external")
    assert live["progress"] == {"phase": "embed", "done": 40, "total": 40}
    assert live["started_at"] is not None and live["elapsed_s"] >= 0
    assert live["eta_s"] in (None, 0) or live["eta_s"] >= 0
    assert status["indexing"] is True and status["running_job_id"] == "cli-0001"
    assert [j["job_id"] for j in listing] == ["cli-0001"]
    assert [(j["job_id"], j["kind"], j["state"]) for j in after] == [
        ("cli-0001", "cli", "succeeded")
    ]
    assert gone.status_code == 404  # a finished job of another process is history only


def test_server_jobs_are_typed_timed_and_kept_in_the_shared_history(
    start_server: ServerFactory, make_settings: SettingsFactory, small_library: SmallLibrary
) -> None:
    settings = make_settings(library=small_library.root)
    served = start_server(settings, descriptions=small_library.descriptions)
    with served.client() as client:
        first = served.wait_job(client, client.post("/api/index/jobs").json()["job_id"])
        rebuild = client.post("/api/index/jobs", json={"mode": "rebuild"}).json()["job_id"]
        second = served.wait_job(client, rebuild)
        listing = client.get("/api/index/jobs").json()["jobs"]
    assert (first["kind"], second["kind"]) == ("incremental", "rebuild")
    assert first["elapsed_s"] > 0 and first["rate_per_s"] > 0 and first["eta_s"] is None
    assert [j["job_id"] for j in listing] == [second["job_id"], first["job_id"]]
    history = JobJournal(settings.data_dir).history()  # a restarted server still lists them
    assert [r["job_id"] for r in history] == [second["job_id"], first["job_id"]]
    assert history[1]["counts"]["embedded"] == 30


def test_the_history_keeps_the_last_jobs_and_the_list_shows_twenty(
    start_server: ServerFactory, make_settings: SettingsFactory, small_library: SmallLibrary
) -> None:
    settings = make_settings(library=small_library.root)
    journal = JobJournal(settings.data_dir)
    for n in range(HISTORY_KEPT + 5):
        journal.append(
            {
                "job_id": f"old-{n:03d}",
                "mode": "incremental",
                "trigger": "schedule",
                "state": "succeeded",
                "created_at": f"2026-11-{1 + n // 24:02d}T{n % 24:02d}:00:00+00:00",
            }
        )
    assert len(journal.history()) == HISTORY_KEPT
    served = start_server(settings)
    with served.client() as client:
        jobs = client.get("/api/index/jobs").json()["jobs"]
    assert len(jobs) == 20
    assert jobs[0]["job_id"] == f"old-{HISTORY_KEPT + 4:03d}" and jobs[0]["kind"] == "scheduled"


_CJK = re.compile(r"[\u4e00-\u9fff]")


def test_every_core_error_body_has_a_chinese_message_beside_the_english_detail() -> None:
    errors: list[PeiTuError] = [
        InvalidQuery("empty"),
        IndexBusy("fd41f46fe2db"),
        LibraryNotFound("gone"),
        IndexMismatch("other model"),
        ModelUnavailable("down"),
        PhotoUnreadable("<_io.BytesIO object at 0x7f00>", "corrupt", "cannot identify"),
        PhotoUnreadable("x", "too_large"),
        PeiTuError("anything"),
    ]
    for error in errors:
        body = error_body(error)
        assert body["detail"] and _CJK.search(body["message"]), body
        latin = re.sub(r"PEITU_\w+|PeiTu|JPEG|WebP|HEIC", "", body["message"])
        assert not re.search(r"[A-Za-z]{4,}", latin), body["message"]
        assert "fd41f46fe2db" not in body["message"] and "<_io" not in body["message"]


def _running(phase: str, done: int, total: int, seconds_in_phase: float) -> JobView:
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    began = now - timedelta(seconds=seconds_in_phase)
    return JobView(
        job_id="j",
        mode="incremental",
        trigger="api",
        state="running",
        phase=phase,
        done=done,
        total=total,
        counts=None,
        errors=(),
        error=None,
        cancel_requested=False,
        created_at=began,
        started_at=began,
        finished_at=None,
        phase_started_at=began,
    )


def test_the_time_left_covers_the_phases_still_to_come() -> None:
    describing = _running("describe", 100, 1000, seconds_in_phase=100.0)  # 1 photo a second
    later = sum(s for _, s in LATER_PHASE_S["describe"]) * 1000  # embedding, visual pass
    assert describing.eta_s is not None
    assert describing.eta_s >= 900 + later * 0.99 and later > 0
    visual = _running("visual", 500, 1000, seconds_in_phase=50.0)  # the last phase: itself only
    assert visual.eta_s is not None and 49 <= visual.eta_s <= 51
    assert _running("scan", 10, 0, seconds_in_phase=1.0).eta_s is None  # nothing known yet
