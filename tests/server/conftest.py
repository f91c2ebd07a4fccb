"""Real servers for the HTTP tests: uvicorn on a free loopback port in a thread, real Chroma in
tmp_path, the real m3e-small embedder, and (for vision) the fake OpenAI-compatible server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from config import Settings, load_settings
from index.search.embed import SentenceTransformerEmbedder
from index.service import PeiTu
from index.wiring import build_app
from server.app import create_app
from server.context import ServerContext
from server.main import uvicorn_config
from tests.support.core_fixtures import SmallLibrary, build_small_library
from tests.support.openai_server import FakeOpenAIServer

TOKEN = "test-admin-token-0123456789abcdef"
FINAL_STATES = {"succeeded", "failed", "cancelled"}


@contextmanager
def serving(api: FastAPI) -> Iterator[str]:
    """Run the app under uvicorn (lifespan on) on 127.0.0.1; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    settings = api.state.ctx.settings  # run as `peitu serve` runs it (its slow-client limits)
    server = uvicorn.Server(uvicorn_config(api, settings, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started, "uvicorn to start", timeout_s=30)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()


def wait_for(condition: Callable[[], object], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


@dataclass
class Served:
    """A running server and what a test needs to talk to it and look behind it."""

    url: str
    api: FastAPI
    app: PeiTu
    settings: Settings
    token: str | None
    library: SmallLibrary | None = None

    @property
    def ctx(self) -> ServerContext:
        ctx: ServerContext = self.api.state.ctx
        return ctx

    def client(self, token: str | None = "", headers: dict[str, str] | None = None) -> httpx.Client:
        """An HTTP client; by default it sends the server's token."""
        sent = self.token if token == "" else token
        all_headers = {"Authorization": f"Bearer {sent}"} if sent else {}
        all_headers.update(headers or {})
        return httpx.Client(base_url=self.url, headers=all_headers, timeout=60)

    def wait_job(self, client: httpx.Client, job_id: str, timeout_s: float = 120) -> dict[str, Any]:
        """Poll the job over HTTP until it has finished; its final JSON."""
        deadline = time.monotonic() + timeout_s
        while True:
            job: dict[str, Any] = client.get(f"/api/index/jobs/{job_id}").json()
            if job["state"] in FINAL_STATES:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {job['state']} after {timeout_s} s")
            time.sleep(0.05)

    def wait_ready(self, client: httpx.Client) -> None:
        wait_for(lambda: client.get("/readyz").status_code == 200, "readyz", timeout_s=60)


ServerFactory = Callable[..., Served]


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a Prometheus text exposition, None when absent."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


@pytest.fixture
def start_server(embedder: SentenceTransformerEmbedder) -> Iterator[ServerFactory]:
    """Start a server for given settings (and sidecar descriptions); stopped after the test."""
    with ExitStack() as stack:

        def start(
            settings: Settings,
            *,
            descriptions: Path | None = None,
            library: SmallLibrary | None = None,
        ) -> Served:
            app = build_app(settings, descriptions=descriptions, embedder=embedder)
            stack.callback(app.close)
            api = create_app(app, settings)
            url = stack.enter_context(serving(api))
            token = settings.admin_token.get_secret_value() if settings.admin_token else None
            return Served(url, api, app, settings, token, library)

        yield start


def vision_settings(server: FakeOpenAIServer, concurrency: int = 4) -> dict[str, Any]:
    """Vision through the fake OpenAI-compatible server: small images, no retries."""
    return {
        "base_url": server.base_url,
        "model": "fake-vl",
        "max_side": 256,
        "timeout_s": 30,
        "max_retries": 0,
        "concurrency": concurrency,
    }


@contextmanager
def serving_indexed(
    root: Path, m3e_path: Path, embedder: SentenceTransformerEmbedder, photos: int = 30
) -> Iterator[Served]:
    """A real server over a small library of eval photos in `root`, indexed from its sidecar
    descriptions (rerank off), ready to answer; closed afterwards."""
    library = build_small_library(root, photos)
    settings = load_settings(
        library=library.root,
        data_dir=root / "data",
        embedding={"model": str(m3e_path)},
        rerank={"enabled": False},
        admin_token=TOKEN,
    )
    app = build_app(settings, descriptions=library.descriptions, embedder=embedder)
    try:
        app.index()
        api = create_app(app, settings)
        with serving(api) as url:
            served = Served(url, api, app, settings, TOKEN, library)
            with served.client() as client:
                served.wait_ready(client)
            yield served
    finally:
        app.close()


@pytest.fixture(scope="module")
def indexed_server(
    tmp_path_factory: pytest.TempPathFactory,
    m3e_path: Path,
    embedder: SentenceTransformerEmbedder,
) -> Iterator[Served]:
    """One server over the 30-photo library, indexed from its sidecar, for read-only tests."""
    with serving_indexed(tmp_path_factory.mktemp("indexed"), m3e_path, embedder) as served:
        yield served
