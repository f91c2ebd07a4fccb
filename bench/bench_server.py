"""Server benchmark: `/api/recommend` throughput and latency at 4 concurrent clients, 2,000 photos.

Indexes ../shared/eval (captions 1-4 as sidecar descriptions, no vision calls) into a temporary
data folder. The LLM reranker is the local fake OpenAI-compatible server answering after a fixed
delay (50 ms by default), and the similarity threshold is off, so every request is reranked.
Then, on the same index and in one run:

1. in-process `PeiTu.recommend`, 1 caller and N concurrent callers (threads);
2. `peitu serve` in a subprocess, over real HTTP with the admin token, 1 client and N clients.

The two phases never overlap, so each has the machine to itself. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_server.py [--photos 2000] [--requests 200] [--clients 4]
                                           [--rerank-delay-ms 50]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from config import Settings, load_settings  # noqa: E402
from index.search.embed import SentenceTransformerEmbedder  # noqa: E402
from index.service import PeiTu  # noqa: E402
from index.wiring import build_app  # noqa: E402
from tests.support.openai_server import FakeOpenAIServer  # noqa: E402

EVAL = REPO.parent / "shared" / "eval"
M3E_SMALL = REPO / "models" / "m3e-small"
TOKEN = "bench-admin-token-0123456789abcdef"
WARM_UP = 8


@dataclass(frozen=True)
class Run:
    label: str
    latencies_ms: list[float]
    wall_s: float

    def line(self) -> str:
        ordered = sorted(self.latencies_ms)
        p95 = ordered[int(0.95 * (len(ordered) - 1))]
        rate = len(ordered) / self.wall_s
        return (
            f"{self.label:<34} {rate:7.1f} req/s   median {statistics.median(ordered):7.1f} ms"
            f"   p95 {p95:7.1f} ms   n={len(ordered)}"
        )


def build_library(root: Path, photos: int) -> tuple[Path, Path, list[str]]:
    """Symlinks to `photos` eval images, their sidecar, and one query (caption 5) per photo."""
    library, lines, queries = root / "photos", [], []
    library.mkdir(parents=True, exist_ok=True)
    for raw in (EVAL / "captions.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(raw)
        captions = record.get("captions_zh") or []
        if len(captions) != 5:
            continue
        name = Path(record["image"]).name
        if not (library / name).is_symlink():
            (library / name).symlink_to(EVAL / "images" / name)
        description = "".join(captions[:4])
        lines.append(json.dumps({"image": name, "description": description}, ensure_ascii=False))
        queries.append(captions[4])
        if len(queries) == photos:
            break
    sidecar = root / "descriptions.jsonl"
    sidecar.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return library, sidecar, queries


def bench_settings(library: Path, data_dir: Path, rerank_url: str) -> Settings:
    return load_settings(
        library=library,
        data_dir=data_dir,
        embedding={"model": str(M3E_SMALL)},
        rerank={"base_url": rerank_url, "model": "fake-chat", "max_retries": 0, "timeout_s": 30},
        similarity_threshold=-1.0,  # every request reaches the reranker
        admin_token=TOKEN,
        indexing={"follow_external_links": True},  # the library is links to ../shared/eval
    )


def measure(label: str, call: Callable[[str], object], texts: list[str], clients: int) -> Run:
    """Run `call` over the texts from `clients` threads; each call timed on its own."""
    for text in texts[:WARM_UP]:
        call(text)
    latencies: list[float] = []
    lock = threading.Lock()

    def timed(text: str) -> None:
        start = time.perf_counter()
        call(text)
        elapsed = (time.perf_counter() - start) * 1000.0
        with lock:
            latencies.append(elapsed)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(timed, texts))
    return Run(label, latencies, time.perf_counter() - start)


def http_caller(url: str) -> Callable[[str], object]:
    """POST /api/recommend with one keep-alive client per thread, as separate users would."""
    local = threading.local()

    def call(text: str) -> object:
        if not hasattr(local, "client"):
            headers = {"Authorization": f"Bearer {TOKEN}"}
            local.client = httpx.Client(base_url=url, headers=headers, timeout=60)
        response = local.client.post("/api/recommend", json={"text": text})
        response.raise_for_status()
        return response.json()

    return call


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _server_env(settings: Settings, rerank_url: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PEITU_", "DASHSCOPE_"))}
    env.update(
        HF_HUB_OFFLINE="1",
        PEITU_LIBRARY=str(settings.library),
        PEITU_DATA_DIR=str(settings.data_dir),
        PEITU_EMBEDDING__MODEL=str(M3E_SMALL),
        PEITU_RERANK__BASE_URL=rerank_url,
        PEITU_RERANK__MODEL="fake-chat",
        PEITU_RERANK__MAX_RETRIES="0",
        PEITU_SIMILARITY_THRESHOLD="-1.0",
        PEITU_ADMIN_TOKEN=TOKEN,
        PEITU_INDEXING__FOLLOW_EXTERNAL_LINKS="true",
        PEITU_SERVER__PORT=str(port),
        PEITU_LOG_LEVEL="WARNING",
    )
    return env


@contextmanager
def peitu_serve(settings: Settings, rerank_url: str, log: Path) -> Iterator[str]:
    """`peitu serve` in a subprocess on a free loopback port; yields its URL once ready."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "serve"],
            env=_server_env(settings, rerank_url, port),
            cwd=REPO,
            stdout=log_file,
            stderr=log_file,
        )
        try:
            _wait_ready(f"{url}/readyz", server)
            yield url
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)


def _wait_ready(url: str, server: subprocess.Popen[bytes], timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"peitu serve exited with {server.returncode}; see its log")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("peitu serve did not become ready in time")


def index_library(settings: Settings, sidecar: Path) -> PeiTu:
    embedder = SentenceTransformerEmbedder(settings.embedding.model)
    embedder.load()
    app = build_app(settings, descriptions=sidecar, embedder=embedder)
    start = time.perf_counter()
    report = app.index()
    elapsed = time.perf_counter() - start
    print(f"indexed {report.embedded} photos (scanned {report.scanned}) in {elapsed:.1f} s")
    return app


@contextmanager
def _work_dir(kept: Path | None) -> Iterator[str]:
    if kept is not None:
        kept.mkdir(parents=True, exist_ok=True)
        yield str(kept)
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield tmp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--photos", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=200, help="per measurement")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rerank-delay-ms", type=float, default=50.0)
    parser.add_argument(
        "--work-dir", type=Path, help="keep the index here and reuse it next time (default: temp)"
    )
    args = parser.parse_args()
    with _work_dir(args.work_dir) as tmp, FakeOpenAIServer() as llm:
        llm.set_mode("rerank", delay_s=args.rerank_delay_ms / 1000.0)
        library, sidecar, queries = build_library(Path(tmp), args.photos)
        texts = (queries * (args.requests // len(queries) + 1))[: args.requests]
        settings = bench_settings(library, Path(tmp) / "data", llm.base_url)
        app = index_library(settings, sidecar)
        print(f"reranker: fake LLM at {args.rerank_delay_ms:g} ms per call; {os.cpu_count()} CPUs")
        runs = [
            measure("in-process PeiTu.recommend, 1", app.recommend, texts, 1),
            measure(
                f"in-process PeiTu.recommend, {args.clients}", app.recommend, texts, args.clients
            ),
        ]
        app.close()
        with peitu_serve(settings, llm.base_url, Path(tmp) / "serve.log") as url:
            call = http_caller(url)
            runs.append(measure("HTTP POST /api/recommend, 1", call, texts, 1))
            runs.append(
                measure(f"HTTP POST /api/recommend, {args.clients}", call, texts, args.clients)
            )
        for run in runs:
            print(run.line())
        print(f"rerank calls answered by the fake LLM: {llm.calls['rerank']}")


if __name__ == "__main__":
    main()
