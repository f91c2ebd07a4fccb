"""The server next to real `peitu` processes: a CLI run holding the lock, a CLI run killed with
SIGKILL mid-describe, and `peitu serve` itself (start, auth, refusal to start)."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from config import load_settings
from index.describers.vision import encode_for_vision, jpeg_data_url
from server.main import run
from tests.server.conftest import TOKEN, ServerFactory, vision_settings, wait_for
from tests.support.core_fixtures import SettingsFactory, SmallLibrary
from tests.support.openai_server import FakeOpenAIServer

MAX_SIDE = 256  # vision_settings: the CLI and the server must send the same images


def _env(data_dir: Path, m3e_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PEITU_", "DASHSCOPE_"))}
    env.update(
        HF_HUB_OFFLINE="1",
        PEITU_DATA_DIR=str(data_dir),
        PEITU_EMBEDDING__MODEL=str(m3e_path),
        PEITU_RERANK__ENABLED="false",
    )
    env.update(extra)
    return env


def _peitu(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli.main", *args]


def _image_keys(server: FakeOpenAIServer) -> list[str]:
    """One key per vision call: the sha256 of the image it was sent."""
    keys = []
    for request in server.requests_of("vision"):
        for message in request.body["messages"]:
            for part in message["content"] if isinstance(message["content"], list) else []:
                if part.get("type") == "image_url":
                    keys.append(hashlib.sha256(part["image_url"]["url"].encode()).hexdigest())
    return keys


def _key_of(photo: Path) -> str:
    url = jpeg_data_url(encode_for_vision(photo, MAX_SIDE, max_pixels=120_000_000))
    return hashlib.sha256(url.encode()).hexdigest()


def _saved_descriptions(data_dir: Path) -> set[str]:
    with sqlite3.connect(f"file:{data_dir / 'catalog.sqlite3'}?mode=ro", uri=True) as db:
        return {row[0] for row in db.execute("SELECT photo_id FROM descriptions")}


def test_a_killed_cli_run_is_finished_by_the_server_with_no_repeated_vision_call(
    start_server: ServerFactory,
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    openai_server: FakeOpenAIServer,
    m3e_path: Path,
) -> None:
    vision = vision_settings(openai_server, concurrency=1)
    settings = make_settings(library=small_library.root, vision=vision, admin_token=TOKEN)
    served = start_server(settings)
    openai_server.set_mode("vision", delay_s=0.25)
    env = _env(
        settings.data_dir,
        m3e_path,
        PEITU_LIBRARY=str(small_library.root),
        PEITU_VISION__BASE_URL=openai_server.base_url,
        PEITU_VISION__MODEL=vision["model"],
        PEITU_VISION__MAX_SIDE=str(MAX_SIDE),
        PEITU_VISION__CONCURRENCY="1",
    )
    cli = subprocess.Popen(
        _peitu("index", "--json"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_for(lambda: len(_saved_descriptions(settings.data_dir)) >= 5, "5 saved", 180)
        with served.client() as client:
            busy = client.post("/api/index/jobs")
            external = client.get(f"/api/index/jobs/{busy.json()['job_id']}").json()
            cancel = client.post(f"/api/index/jobs/{busy.json()['job_id']}/cancel")
        cli.send_signal(signal.SIGKILL)
    finally:
        cli.kill()
        cli.wait(timeout=30)
    assert cli.returncode == -signal.SIGKILL
    holder = (settings.data_dir / "index.library.lock").read_text().strip()
    assert busy.status_code == 409 and busy.json()["job_id"] == holder
    assert (external["trigger"], external["state"]) == ("external", "running")
    assert cancel.status_code == 409 and "another process" in cancel.json()["detail"]

    saved = _saved_descriptions(settings.data_dir)
    first_run = _image_keys(openai_server)
    openai_server.set_mode("vision", delay_s=0.0)
    with served.client() as client:  # the kernel dropped the dead process's lock
        job = served.wait_job(client, client.post("/api/index/jobs").json()["job_id"])
    second_run = _image_keys(openai_server)[len(first_run) :]

    assert job["state"] == "succeeded"
    assert job["counts"]["described"] == 30 - len(saved) and job["counts"]["embedded"] == 30
    files = {pid: small_library.root / rel for rel, pid in served.app.catalog.files().items()}
    saved_keys = {_key_of(files[pid]) for pid in saved}
    assert len(saved_keys) == len(saved) >= 5
    assert saved_keys.isdisjoint(second_run)  # ZERO repeated calls for what was saved
    assert len(second_run) == len(set(second_run)) == 30 - len(saved)
    # At most the one call in flight at the kill (concurrency 1) was sent in both runs.
    assert len(set(first_run) & set(second_run)) <= 1
    assert served.app.store.count() == 30


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_peitu_serve_starts_answers_and_stops_on_sigterm(tmp_path: Path, m3e_path: Path) -> None:
    port = _free_port()
    env = _env(tmp_path / "data", m3e_path, PEITU_ADMIN_TOKEN=TOKEN, PEITU_LIBRARY=str(tmp_path))
    server = subprocess.Popen(
        _peitu("serve", "--port", str(port)), env=env, stderr=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _status(f"{url}/readyz") == 200, "peitu serve to be ready", 180)
        with httpx.Client(base_url=url) as client:
            without = client.get("/api/status")
            status = client.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"})
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=60)
    finally:
        server.kill()
        stderr = server.communicate()[1]
    assert without.status_code == 401
    assert status.status_code == 200 and status.json()["photos"] == 0
    # uvicorn shuts down gracefully, then re-raises the signal it caught: exit status -SIGTERM.
    assert code in (0, -signal.SIGTERM) and "Application shutdown complete" in stderr, stderr
    assert TOKEN not in stderr


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.TransportError:
        return 0


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::"])
def test_serve_refuses_a_public_host_without_a_token(
    tmp_path: Path, host: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(data_dir=tmp_path, server={"host": host})
    assert run(settings) == 2
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert f"refusing to listen on {host} without an admin token" in record.getMessage()
    assert "PEITU_ADMIN_TOKEN" in record.getMessage()
    assert not (tmp_path / "catalog.sqlite3").exists()  # refused before building anything


def test_serve_refusal_from_the_cli_is_one_clear_line(tmp_path: Path, m3e_path: Path) -> None:
    proc = subprocess.run(
        _peitu("serve", "--host", "0.0.0.0"),
        env=_env(tmp_path / "data", m3e_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "PEITU_ADMIN_TOKEN" in lines[0], proc.stderr


def test_serve_refuses_a_bad_cron_schedule(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, indexing={"schedule_cron": "at midnight"})
    assert run(settings) == 2
