"""Scale benchmark: stores of N photos built through the project's own stores (`ChromaStore`,
`HnswStore`) and `Catalog`, then the search path and the server endpoints measured by a fresh
serving process, beside raw hnswlib and numpy brute force on the same vectors in the same run.

Vectors are real m3e-small vectors of the ../shared/eval descriptions (the configured document
encoding) mixed with a second description and small noise, so N photos are N distinct vectors
with realistic neighbourhoods. Queries are real held-out captions (the `rich` protocol), embedded
by the serving process as `PeiTu.recommend` does (rerank off).

For each N and store (--backends; Chroma up to --chroma-max) it prints: insert rate (vectors/s
through the store's upsert, then its flush) and catalog write time, disk size; then, from a fresh
serving process that opens the store as `peitu serve` does (its warm-up included): open and
warm-up time, RSS after open and after 100 queries, recommend p50/p95/p99 with the embed and
search parts, recommend of texts with a time word (a filter keeping a sixth of the photos), and
the store's own query beside raw hnswlib (the same M / ef_construction, at the store's ef) and
numpy brute force (up to --brute-max), the three run in turn on each query vector in that same
process, so their ratio holds whatever the machine's load does; recall@20 of the store's and of
hnswlib's search against exact top-20; p50/p95 of GET /api/photos/{id}, /api/status, /readyz,
/metrics in-process (`TestClient`) and over real HTTP (uvicorn on a loopback port, httpx), one
request of each in turn. Every process of the run has one BLAS thread (numpy's baseline is one
thread, as hnswlib's queries are). With --chroma-server-at N the same serving measurements run
again against a `chroma run` server holding that store. Then the indexing throughput, with both
cores free and with one kept busy: `PeiTu.index` of --index-photos photos from a descriptions
file against the raw encoder on the same encoder inputs (the mixture's distinct pieces and
wholes), alternated run by run; the raw encoder per runtime (torch, onnxruntime, onnxruntime int8;
1 and 2 threads); `PeiTu.index` of this tree (both stores; each runtime) and --old. The model is
exported for onnxruntime once at the start (timed; every process of the run shares the export);
a runtime whose export fails (int8 on a CPU it cannot run on) is reported and left out. The load
average is printed beside each block. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_scale.py [--sizes 2000,100000,1000000] [--queries 200]
        [--backends chroma,hnsw] [--chroma-max 100000] [--brute-max 100000]
        [--chroma-server-at 100000] [--index-photos 2000] [--index-repeat 2] [--old REF]
        [--work DIR]

Run time on an otherwise idle 2-core, 24 GB machine: `--sizes 2000,100000,1000000 --chroma-max
100000 --index-photos 0` took 15 min (the 1M store: 7 min to build with its catalog, 3 min for the
raw hnswlib reference, 2 min to serve); `--index-photos 2000 --old 118b929` adds ~8 min. Chroma
is built up to --chroma-max only: storing 1M vectors in it takes ~1.5 h here.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import itertools
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One BLAS thread in every process of the run (set before numpy loads): the numpy baseline is
# then one thread like hnswlib's queries and the stores' own searches.
for _blas in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_blas] = "1"

import numpy as np  # noqa: E402
from pydantic import SecretStr  # noqa: E402

from cli.evaluation import protocol_text, read_eval_set  # noqa: E402
from config import Settings, load_settings  # noqa: E402
from index.library.catalog import Catalog  # noqa: E402
from index.library.lock import IndexLock  # noqa: E402
from index.models import PhotoFile  # noqa: E402
from index.ports import StoredVector, VectorStore  # noqa: E402
from index.search.embed import SentenceTransformerEmbedder  # noqa: E402
from index.search.retrieval import RetrievalConfig, strip_filler  # noqa: E402
from index.search.store import HNSW_TUNING  # noqa: E402
from index.search.store_hnsw import auto_ef_search  # noqa: E402
from index.understanding.filters import wall_clock_ts  # noqa: E402
from index.wiring import build_app, text_store  # noqa: E402

EVAL_DIR = Path(os.environ.get("PEITU_EVAL_DIR", REPO.parent / "shared" / "eval"))
MODEL = REPO / "models" / "m3e-small"
CHUNK = 5000  # photos generated and written per step
NOISE = 0.25  # norm of the noise added to each unit vector
K = 20
TOKEN = "bench-token"
TIME_WORD = "2024年"  # photos are dated 2019-2024 evenly: a sixth of them in 2024


# --- helpers ------------------------------------------------------------------------------
def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _ms(samples: list[float]) -> str:
    return f"p50 {_pct(samples, 0.5):7.2f}  p95 {_pct(samples, 0.95):7.2f}  p99 {_pct(samples, 0.99):7.2f} ms"


def _rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def _du_mb(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def _load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def _settings(data_dir: Path, chroma_url: str = "", backend: str = "chroma") -> Settings:
    return load_settings(
        data_dir=data_dir,
        library=data_dir / "library",
        embedding={"model": str(MODEL)},
        rerank={"enabled": False},
        chroma={"url": chroma_url},
        store={"backend": backend},
    )


def _store(backend: str, data_dir: Path, dimension: int) -> VectorStore:
    """The project's store for `backend`, made as `index.wiring.build_app` makes it."""
    settings = _settings(data_dir, backend=backend)
    lock = IndexLock(data_dir / "index.library.lock")
    return text_store(settings, data_dir, MODEL.name, dimension, lock)


def _store_disk_mb(backend: str, data_dir: Path) -> float:
    return _du_mb(data_dir / ("vectors" if backend == "hnsw" else "chroma"))


# --- data ---------------------------------------------------------------------------------
def _base(settings: Settings, queries: int, cache: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """Descriptions and their stored vectors (kept in `cache` for the next run); query texts."""
    images = read_eval_set(EVAL_DIR / "captions.jsonl")
    pairs = [protocol_text(image, "rich") for image in images]
    descriptions = [d for d, _ in pairs]
    texts = [q for _, q in pairs if q is not None]
    random.Random(7).shuffle(texts)
    encoder = RetrievalConfig.from_settings(settings.retrieval).encoder
    if cache.is_file():
        vectors = np.load(cache)
    else:
        embedder = SentenceTransformerEmbedder(str(MODEL), threads=settings.embedding.threads)
        vectors = np.asarray(encoder.encode(embedder, descriptions), dtype=np.float32)
        np.save(cache, vectors)
    return descriptions, vectors, texts[:queries]


def _photo_vectors(base: np.ndarray, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors of photos start..stop-1 (deterministic) and the description each one has."""
    rng = np.random.default_rng(start)
    n = stop - start
    first = rng.integers(0, len(base), n)
    second = rng.integers(0, len(base), n)
    mix = rng.uniform(0.0, 0.3, (n, 1)).astype(np.float32)
    noise = rng.standard_normal((n, base.shape[1])).astype(np.float32)
    noise *= NOISE / np.sqrt(base.shape[1])
    v = (1.0 - mix) * base[first] + mix * base[second] + noise
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v.astype(np.float32), first


def _photo_id(i: int) -> str:
    return hashlib.sha256(f"photo-{i}".encode()).hexdigest()


def _photo(i: int) -> PhotoFile:
    rng = random.Random(i)
    taken = datetime(2019, 1, 1) + timedelta(seconds=rng.randrange(6 * 365 * 86400))
    rel = f"{taken.year}/{taken.month:02d}/IMG_{i:07d}.jpg"
    gps = (rng.uniform(20, 45), rng.uniform(100, 122)) if rng.random() < 0.3 else (None, None)
    return PhotoFile(
        _photo_id(i), Path(rel), rel, rng.randrange(500_000, 6_000_000), 1.7e9 + i,
        4032, 3024, taken, gps[0], gps[1],
    )  # fmt: skip


def _metadata(photo: PhotoFile) -> dict[str, Any]:
    assert photo.taken_at is not None
    return {
        "path": photo.rel_path,
        "width": photo.width,
        "height": photo.height,
        "taken_at": photo.taken_at.isoformat(),
        "taken_ts": wall_clock_ts(photo.taken_at),
        "gps_lat": photo.gps_lat,
        "gps_lon": photo.gps_lon,
        "phash": f"{random.Random(photo.photo_id).getrandbits(64):016x}",
        "describer": "sidecar",
    }


# --- build --------------------------------------------------------------------------------
def _build(
    n: int, data_dir: Path, base: np.ndarray, descriptions: list[str], backends: list[str]
) -> tuple[np.ndarray, dict[str, Any]]:
    """The catalog of n photos and each backend's store of them (the same vectors); returns
    all the vectors and the build figures (seconds and vectors/s per store)."""
    stores = {b: _store(b, data_dir, base.shape[1]) for b in backends}
    catalog = Catalog(data_dir / "catalog.sqlite3")
    everything = np.zeros((n, base.shape[1]), dtype=np.float32)
    store_s = dict.fromkeys(backends, 0.0)
    catalog_s = 0.0
    described_by: list[int] = []
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        vectors, first = _photo_vectors(base, start, stop)
        everything[start:stop] = vectors
        described_by.extend(int(f) for f in first)
        photos = [_photo(i) for i in range(start, stop)]
        items = [
            StoredVector(p.photo_id, v.tolist(), descriptions[f], _metadata(p))
            for p, v, f in zip(photos, vectors, first, strict=True)
        ]
        for backend, store in stores.items():
            t = time.perf_counter()
            store.upsert(items)
            store_s[backend] += time.perf_counter() - t
        t = time.perf_counter()
        for p, f in zip(photos, first, strict=True):
            catalog.save_description(p.photo_id, "sidecar", descriptions[f])
        catalog.mark_embedded(
            [(p.photo_id, descriptions[f], p.rel_path) for p, f in zip(photos, first, strict=True)],
            MODEL.name,
        )
        catalog_s += time.perf_counter() - t
        if stop % 100_000 == 0 or stop == n:
            stored = ", ".join(f"{b} {s:6.0f} s" for b, s in store_s.items())
            print(
                f"    built {stop:>9,} photos  ({stored}; catalog {catalog_s:5.0f} s, load {_load()})",
                flush=True,
            )
    flush_s = {}
    for backend, store in stores.items():  # the end of an index job: the graph saved
        t = time.perf_counter()
        store.flush()
        flush_s[backend] = time.perf_counter() - t
    t = time.perf_counter()
    catalog.replace_files(_photo(i) for i in range(n))
    run = catalog.start_run("rebuild")
    from index.models import IndexReport

    catalog.finish_run(run, IndexReport(scanned=n, new=n, described=n, embedded=n))
    catalog_s += time.perf_counter() - t
    catalog.close()
    del stores
    gc.collect()
    return everything, {"store_s": store_s, "flush_s": flush_s, "catalog_s": catalog_s}


# --- references ---------------------------------------------------------------------------
def _exact(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Exact top-K row numbers per query (cosine = dot on unit vectors), chunked."""
    best_s = np.full((len(queries), K), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), K), dtype=np.int64)
    for start in range(0, len(vectors), 200_000):
        sims = queries @ vectors[start : start + 200_000].T
        top = np.argpartition(-sims, K, axis=1)[:, :K]
        s = np.take_along_axis(sims, top, axis=1)
        all_s = np.concatenate([best_s, s], axis=1)
        all_i = np.concatenate([best_i, top + start], axis=1)
        keep = np.argsort(-all_s, axis=1)[:, :K]
        best_s = np.take_along_axis(all_s, keep, axis=1)
        best_i = np.take_along_axis(all_i, keep, axis=1)
    return best_i


def _recall(found: list[set[int]], exact: np.ndarray) -> tuple[float, float]:
    values = [len(f & set(e.tolist())) / K for f, e in zip(found, exact, strict=True)]
    return statistics.mean(values), min(values)


def _raw_index(vectors: np.ndarray, path: Path) -> float:
    """Raw hnswlib on the same vectors (M 16, ef_construction 100, as both stores build), saved
    for the serving processes to query beside the store; returns its build rate (vectors/s)."""
    import hnswlib

    index = hnswlib.Index(space="cosine", dim=vectors.shape[1])
    index.init_index(max_elements=len(vectors), M=16, ef_construction=100)
    t = time.perf_counter()
    index.add_items(vectors, np.arange(len(vectors)), num_threads=-1)  # build: all cores
    rate = len(vectors) / (time.perf_counter() - t)
    index.save_index(str(path))
    return rate


def _brute_top(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    sims = vectors @ query
    top = np.argpartition(-sims, K)[:K]
    return top[np.argsort(-sims[top])]


# --- serve (a fresh process) ------------------------------------------------------------------
def _serve(args: argparse.Namespace) -> None:
    """Open the store as the server does (its warm-up included) and measure; prints one JSON
    line. The store's own query, raw hnswlib and numpy brute force run in turn on each query
    vector, in this process: their ratios hold whatever the machine's load does meanwhile."""
    data_dir = Path(args.serve)
    settings = _settings(data_dir, args.chroma_url, args.backend).model_copy(
        update={"admin_token": SecretStr(TOKEN)}
    )
    texts = json.loads((data_dir / "queries.json").read_text(encoding="utf-8"))
    out: dict[str, Any] = {"rss_start_mb": _rss_mb()}
    t = time.perf_counter()
    app = build_app(settings)
    out["open_s"] = time.perf_counter() - t
    t = time.perf_counter()
    app.warm_up()  # as `peitu serve` and `peitu bot` do at start-up
    out["warm_up_s"] = time.perf_counter() - t
    t = time.perf_counter()
    app.recommend(texts[0], 5, rerank=False)
    out["first_query_s"] = time.perf_counter() - t
    out["rss_open_mb"] = _rss_mb()
    out.update(_recommends(app, texts, out))
    out.update(_searches(app, data_dir, args))
    out["time_word"] = _timed_recommends(app, [f"{TIME_WORD}{text}" for text in texts[:50]])
    out["endpoints"] = _endpoints(app, settings, args)
    out["rss_end_mb"] = _rss_mb()
    out["load"] = _load()
    app.close()
    print("RESULT " + json.dumps(out))


def _recommends(app: Any, texts: list[str], out: dict[str, Any]) -> dict[str, list[float]]:
    total, embed, search = [], [], []
    for i, text in enumerate(texts):
        t = time.perf_counter()
        result = app.recommend(text, 5, rerank=False)
        total.append((time.perf_counter() - t) * 1000)
        embed.append(result.timings_ms["embed"])
        search.append(result.timings_ms["search"])
        if i == min(99, len(texts) - 1):
            out["rss_100_mb"] = _rss_mb()
    return {"total": total, "embed": embed, "search": search}


def _timed_recommends(app: Any, texts: list[str]) -> dict[str, list[float]]:
    """Wall and CPU milliseconds of each recommend (CPU: this process's, every thread's; what a
    busy neighbour does not inflate)."""
    wall, cpu = [], []
    for text in texts:
        t, c = time.perf_counter(), time.process_time()
        app.recommend(text, 5, rerank=False)
        wall.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
    return {"wall": wall, "cpu": cpu}


def _searches(app: Any, data_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The store's query, raw hnswlib (at the store's `ef`) and numpy brute force, in turn on
    each query vector; the recall@20 of the store and of hnswlib against the exact top-20."""
    import hnswlib

    queries = np.load(data_dir / "query_vectors.npy")
    exact = np.load(data_dir / "exact.npy")
    raw = hnswlib.Index(space="cosine", dim=queries.shape[1])
    raw.load_index(str(data_dir / "raw.hnsw"))
    raw.set_ef(args.ef)
    brute_file = data_dir / "vectors.npy"
    vectors = np.load(brute_file) if brute_file.is_file() else None
    row = {_photo_id(i): i for i in range(args.n)}
    times: dict[str, list[float]] = {"store": [], "raw": [], "brute": []}
    found: dict[str, list[set[int]]] = {"store": [], "raw": []}
    for query in queries:
        t = time.perf_counter()
        hits = app.store.query(query.tolist(), K)
        times["store"].append((time.perf_counter() - t) * 1000)
        found["store"].append({row[c.photo_id] for c in hits})
        t = time.perf_counter()
        labels, _ = raw.knn_query(query, k=K, num_threads=1)
        times["raw"].append((time.perf_counter() - t) * 1000)
        found["raw"].append({int(x) for x in labels[0]})
        if vectors is not None:
            t = time.perf_counter()
            _brute_top(vectors, query)
            times["brute"].append((time.perf_counter() - t) * 1000)
    del row, raw, vectors
    gc.collect()
    recall, worst = _recall(found["store"], exact)
    raw_recall, raw_worst = _recall(found["raw"], exact)
    return {
        "store_query": times["store"],
        "raw_query": times["raw"],
        "brute_query": times["brute"],
        "recall": recall,
        "recall_min": worst,
        "raw_recall": raw_recall,
        "raw_recall_min": raw_worst,
    }


def _endpoints(app: Any, settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """GET /api/photos/{id}, /api/status, /readyz, /metrics: in-process (`TestClient`) and over
    real HTTP (uvicorn on a loopback port, httpx), one request of each in turn."""
    import httpx
    from fastapi.testclient import TestClient

    from server.app import create_app

    ids = [_photo_id(random.Random(i).randrange(args.n)) for i in range(args.requests)]
    headers = {"Authorization": f"Bearer {TOKEN}"}
    paths = ("/api/photos/{id}", "/api/status", "/readyz", "/metrics")
    found: dict[str, Any] = {path: {"in_process": [], "http": []} for path in paths}
    with (
        TestClient(create_app(app, settings), headers=headers) as local,
        _http_server(create_app(app, settings)) as url,
        httpx.Client(base_url=url, headers=headers, trust_env=False, timeout=60) as remote,
    ):
        _wait_ready(local, remote)
        for path in paths:
            for photo_id in ids:
                for way, client in (("in_process", local), ("http", remote)):
                    t = time.perf_counter()
                    response = client.get(path.format(id=photo_id))
                    found[path][way].append((time.perf_counter() - t) * 1000)
                    if response.status_code != 200:
                        raise SystemExit(f"{path}: HTTP {response.status_code} ({way})")
    return found


def _wait_ready(*clients: Any) -> None:
    deadline = time.monotonic() + 120
    for client in clients:
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)


@contextlib.contextmanager
def _http_server(api: Any) -> Iterator[str]:
    """The app served by uvicorn in a thread of this process, on a free loopback port."""
    import socket
    import threading

    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _run_serve(
    n: int,
    data_dir: Path,
    args: argparse.Namespace,
    ef: int,
    url: str = "",
    backend: str = "chroma",
) -> dict[str, Any]:
    command = [sys.executable, __file__, "--serve", str(data_dir), "--n", str(n), "--ef", str(ef)]
    command += ["--requests", str(args.requests), "--chroma-url", url, "--backend", backend]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[7:])
            return result
    raise SystemExit(f"the serving process failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")


def _print_serve(label: str, s: dict[str, Any], ef: int) -> None:
    search_p50 = _pct(s["search"], 0.5)
    total_p50 = _pct(s["total"], 0.5)
    store_p50, raw_p50 = _pct(s["store_query"], 0.5), _pct(s["raw_query"], 0.5)
    print(
        f"  serving {label}: open {s['open_s']:.1f} s, warm-up {s['warm_up_s']:.1f} s (model, "
        f"dictionary, store), first query {s['first_query_s']:.2f} s; RSS {s['rss_open_mb']:.0f} MB "
        f"after open, {s['rss_100_mb']:.0f} MB after 100 queries, {s['rss_end_mb']:.0f} MB at the "
        f"end  (load {s['load']})"
    )
    print(f"    PeiTu.recommend  {_ms(s['total'])}")
    print(
        f"      embed          {_ms(s['embed'])}  ({100 * _pct(s['embed'], 0.5) / total_p50:.0f}% of p50)"
    )
    print(f"      search         {_ms(s['search'])}  ({100 * search_p50 / total_p50:.0f}% of p50)")
    timed = s["time_word"]
    print(
        f"    PeiTu.recommend of 「{TIME_WORD}…」 (a time filter) {_ms(timed['wall'])}; CPU "
        f"p50 {_pct(timed['cpu'], 0.5):.2f} ms"
    )
    print(
        f"    store.query k=20 {_ms(s['store_query'])}  = {store_p50 / raw_p50:.1f}x raw hnswlib "
        f"p50, interleaved query by query"
    )
    print(f"    raw hnswlib ef {ef:<5} {_ms(s['raw_query'])}")
    if s["brute_query"]:
        brute = _pct(s["brute_query"], 0.5)
        print(f"    numpy brute force {_ms(s['brute_query'])}  (store = {store_p50 / brute:.1f}x)")
    print(
        f"    recall@20: the store {s['recall']:.4f} (worst query {s['recall_min']:.2f}), raw "
        f"hnswlib {s['raw_recall']:.4f} (worst {s['raw_recall_min']:.2f})"
    )
    for path, ways in s["endpoints"].items():
        local, http = ways["in_process"], ways["http"]
        print(
            f"    GET {path:<18} in-process p50 {_pct(local, 0.5):6.2f} p95 {_pct(local, 0.95):6.2f} ms; "
            f"over HTTP p50 {_pct(http, 0.5):6.2f} p95 {_pct(http, 0.95):6.2f} ms"
        )


# --- indexing throughput -----------------------------------------------------------------------
# Both measure the same thing on the same texts: the distinct encoder inputs of the first N
# descriptions under the configured document encoding (`DocumentEncoder.inputs`), so that
# index rate / raw rate says what indexing adds to the encoder (scan, store, catalog).
_ENCODER_RATE = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from index.search.embed import SentenceTransformerEmbedder
from cli.evaluation import protocol_text, read_eval_set
from index.search.retrieval import DocumentEncoder
threads, count, model, captions = sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
runtime, exports = sys.argv[6], Path(sys.argv[7])
texts = [protocol_text(i, "rich")[0] for i in read_eval_set(Path(captions))][:count]
inputs = DocumentEncoder("mixture", 0.3).inputs(texts)
threads = threads if threads == "auto" else int(threads)
e = SentenceTransformerEmbedder(model, threads=threads, runtime=runtime, export_cache=exports)
e.embed(inputs[:8])
t, c = time.perf_counter(), time.process_time()
e.embed(inputs)
print("RATE", len(inputs), time.perf_counter() - t, time.process_time() - c, e.runtime)
"""

_INDEX_RUN = """
import os, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
os.chdir(sys.argv[1])
from config import Settings, load_settings
try:  # this tree
    from index.wiring import build_app
    from cli.evaluation import prepare_library, read_eval_set
except ImportError:  # a tree from before the composition root moved (118b929, say)
    from index.app import build_app
    from index.evaluation import prepare_library, read_eval_set
count, model, eval_dir = int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
backend = {"store": {"backend": sys.argv[5]}} if sys.argv[5] != "chroma" else {}
embedding = {"model": model}
fields = Settings.model_fields["embedding"].annotation.model_fields
if "runtime" in fields:
    embedding["runtime"] = sys.argv[6]  # the export itself is made before, in PEITU_EMBEDDING__EXPORT_DIR
if "threads" in fields:
    embedding["threads"] = sys.argv[7] if sys.argv[7] == "auto" else int(sys.argv[7])
if "visual" in Settings.model_fields:  # text indexing only, as in trees without photo vectors
    backend["visual"] = {"backend": "off"}
if "follow_external_links" in Settings.model_fields["indexing"].annotation.model_fields:
    backend["indexing"] = {"follow_external_links": True}  # the library is links to the eval set
images = read_eval_set(eval_dir / "captions.jsonl", count)[:count]
work = Path(tempfile.mkdtemp(prefix="peitu-index-"))
library, sidecar, _ = prepare_library(images, eval_dir / "images", "rich", work)
settings = load_settings(data_dir=work / "data", library=library, embedding=embedding,
                         rerank={"enabled": False}, chroma={"url": ""}, **backend)
app = build_app(settings, descriptions=sidecar)
app.embedder.embed(["预热"])  # the model loaded, as the raw encoder's is
t, c = time.perf_counter(), time.process_time()
report = app.index()
print("INDEXED", report.embedded, time.perf_counter() - t, time.process_time() - c)
"""


def _python(script: str, *argv: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", script, *argv], capture_output=True, text=True, check=False
    )
    for line in done.stdout.splitlines():
        if line.startswith(("RATE ", "INDEXED ")):
            return line.split()[1:]
    raise MeasureFailed(done.stderr[-3000:])


class MeasureFailed(Exception):
    """A measuring process failed (its stderr's end is the message)."""


def _old_tree(ref: str, work: Path) -> Path:
    """The project at git `ref`, extracted beside the stores (models linked in)."""
    tree = work / f"tree-{ref.replace('/', '_')}"
    if not tree.is_dir():
        tree.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", ref], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


_EXPORT_ONCE = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from index.search.embed import SentenceTransformerEmbedder
t = time.perf_counter()
e = SentenceTransformerEmbedder(sys.argv[2], runtime=sys.argv[4], export_cache=Path(sys.argv[3]))
e.load()
print("RATE", time.perf_counter() - t, e.runtime)
"""


def _export_once(exports: Path) -> list[str]:
    """Export the model for onnxruntime (fp32 and int8) into `exports`, which every process of
    the run then shares (timed apart: a user's first start pays it once). Returns the runtimes
    that can run: one whose export fails (int8 on a CPU it cannot run on, say) is reported and
    left out of the rest of the run."""
    os.environ["PEITU_EMBEDDING__EXPORT_DIR"] = str(exports)
    usable = ["torch"]
    for runtime in ("onnx", "onnx-int8"):
        try:
            seconds, _ = _python(_EXPORT_ONCE, str(REPO), str(MODEL), str(exports), runtime)
        except MeasureFailed as error:
            reason = str(error).strip().splitlines()[-1:] or ["(no message)"]
            print(f"export of {MODEL.name} for {runtime} failed, {runtime} skipped: {reason[0]}")
            continue
        usable.append(runtime)
        print(f"export of {MODEL.name} for onnxruntime ({runtime}, once): {float(seconds):.1f} s")
    return usable


def _indexing(count: int, work: Path, old_ref: str, runtimes: list[str], repeat: int) -> None:
    """With both cores free and with one kept busy: `PeiTu.index` of `count` photos from a
    descriptions file (text only) against the raw encoder on the same encoder inputs, alternated
    run by run (one thread each: the CPU figures then compare work, not waiting); then the raw
    encoder's rate per runtime and thread count, and `PeiTu.index` of this tree's other set-ups
    and of `old_ref`. The model is exported once before (`_export_once`)."""
    for neighbour in ("idle", "busy"):
        with _busy_core(neighbour == "busy"):
            condition = "one core kept busy beside it" if neighbour == "busy" else "both cores free"
            _paired(count, condition, repeat)
            _encoder_rates(count, condition, runtimes)
            _index_runs(count, condition, work, old_ref, runtimes)


def _paired(count: int, condition: str, repeat: int) -> None:
    exports, captions = os.environ["PEITU_EMBEDDING__EXPORT_DIR"], str(EVAL_DIR / "captions.jsonl")
    raw: list[tuple[float, float]] = []
    index: list[tuple[float, float]] = []
    inputs = 0
    for _ in range(repeat):
        n, wall, cpu, _ = _python(
            _ENCODER_RATE, str(REPO), "1", str(count), str(MODEL), captions, "onnx", exports
        )
        inputs = int(n)
        raw.append((inputs / float(wall), inputs / float(cpu)))
        _, wall, cpu = _python(
            _INDEX_RUN, str(REPO), str(count), str(MODEL), str(EVAL_DIR), "chroma", "auto", "1"
        )
        index.append((inputs / float(wall), inputs / float(cpu)))
    (raw_wall, raw_cpu), (index_wall, index_cpu) = _medians(raw), _medians(index)
    print(
        f"  {count} descriptions = {inputs} encoder inputs (the mixture's pieces and wholes), one "
        f"thread, {condition}, {repeat} alternated run(s) each (load {_load()}):\n"
        f"    raw encoder          {raw_wall:5.0f} inputs/s wall, {raw_cpu:5.0f} per CPU-s\n"
        f"    PeiTu.index (chroma) {index_wall:5.0f} inputs/s wall, {index_cpu:5.0f} per CPU-s"
        f"  = {index_wall / raw_wall:.2f}x / {index_cpu / raw_cpu:.2f}x the raw encoder",
        flush=True,
    )


def _medians(pairs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)


def _encoder_rates(count: int, condition: str, runtimes: list[str]) -> None:
    exports, captions = os.environ["PEITU_EMBEDDING__EXPORT_DIR"], str(EVAL_DIR / "captions.jsonl")
    for runtime, threads in itertools.product(runtimes, ("1", "2")):
        try:
            n, wall, cpu, used = _python(
                _ENCODER_RATE, str(REPO), threads, str(count), str(MODEL), captions, runtime,
                exports,
            )  # fmt: skip
        except MeasureFailed as error:
            print(f"  encoder, {runtime}, {threads} thread(s): failed, skipped ({error!s:.200})")
            continue
        print(
            f"  encoder, {runtime} (runs in {used}), {threads} thread(s), {condition}: "
            f"{int(n) / float(wall):5.0f} inputs/s, {int(n) / float(cpu):5.0f} per CPU-s  "
            f"(load {_load()})",
            flush=True,
        )


def _index_runs(count: int, condition: str, work: Path, old_ref: str, runtimes: list[str]) -> None:
    runs = [
        ("this tree, hnsw", REPO, "hnsw", "auto"),
        ("this tree, chroma", REPO, "chroma", "auto"),
    ]
    runs += [(f"this tree, hnsw, runtime {r}", REPO, "hnsw", r) for r in runtimes if r != "onnx"]
    if old_ref:
        runs.append((f"old {old_ref}", _old_tree(old_ref, work), "chroma", "torch"))
    for label, tree, backend, runtime in runs:
        try:
            embedded, wall, cpu = _python(
                _INDEX_RUN, str(tree), str(count), str(MODEL), str(EVAL_DIR), backend, runtime,
                "auto",
            )  # fmt: skip
        except MeasureFailed as error:
            print(f"  PeiTu.index, {label}: failed, skipped ({error!s:.200})")
            continue
        print(
            f"  PeiTu.index --descriptions, {label}, {condition}: {embedded} photos in "
            f"{float(wall):.1f} s ({float(cpu):.1f} CPU-s) = {int(embedded) / float(wall):.0f} "
            f"photos/s  (load {_load()})",
            flush=True,
        )


@contextlib.contextmanager
def _busy_core(busy: bool) -> Iterator[None]:
    """A neighbour process spinning on one core while the block runs (when `busy`)."""
    if not busy:
        yield
        return
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


# --- main ---------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="2000,100000,1000000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--requests", type=int, default=200, help="requests per endpoint")
    parser.add_argument("--brute-max", type=int, default=100_000)
    parser.add_argument("--chroma-server-at", type=int, default=100_000)
    parser.add_argument("--backends", default="chroma,hnsw", help="stores to build and serve")
    parser.add_argument(
        "--chroma-max", type=int, default=100_000, help="largest N stored in Chroma too"
    )
    parser.add_argument("--index-photos", type=int, default=2000, help="0 skips the indexing part")
    parser.add_argument(
        "--index-repeat", type=int, default=2, help="alternated raw/index runs per condition"
    )
    parser.add_argument("--old", default="main", help="git ref to compare indexing with ('' skips)")
    parser.add_argument("--work", type=Path, default=None, help="folder for the stores (kept)")
    parser.add_argument("--serve", default="", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--chroma-url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="chroma", help=argparse.SUPPRESS)
    parser.add_argument("--ef", type=int, default=600, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(args)
        return
    began = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="peitu-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"bench_scale: sizes {args.sizes}, {args.queries} queries, work {work}; {os.cpu_count()} CPUs, load {_load()}"
    )
    runtimes = _export_once(work / "encoders")
    settings0 = _settings(work)
    descriptions, base, texts = _base(settings0, args.queries, work / "base.npy")
    print(
        f"base: {len(descriptions)} descriptions, dimension {base.shape[1]}, encoding "
        f"{RetrievalConfig.from_settings(settings0.retrieval).encoder.identity}",
        flush=True,
    )
    query_embedder = SentenceTransformerEmbedder(str(MODEL), threads=1)
    queries = query_embedder.embed([strip_filler(t) for t in texts])
    del query_embedder
    for n in (int(size) for size in args.sizes.split(",") if size):
        data_dir = work / f"n{n}"
        shutil.rmtree(data_dir, ignore_errors=True)
        data_dir.mkdir(parents=True)
        backends = [b for b in args.backends.split(",") if b != "chroma" or n <= args.chroma_max]
        print(f"\nN = {n:,}, stores: {', '.join(backends)}  (load {_load()})", flush=True)
        t = time.perf_counter()
        vectors, built = _build(n, data_dir, base, descriptions, backends)
        build_s = time.perf_counter() - t
        for b in backends:
            print(
                f"  insert into {b}: {n / built['store_s'][b]:.0f} vectors/s through its upsert "
                f"({built['store_s'][b]:.0f} s, then flush {built['flush_s'][b]:.1f} s); "
                f"disk {_store_disk_mb(b, data_dir):.0f} MB"
            )
        cat = _du_mb(data_dir / "catalog.sqlite3")
        print(f"  catalog {built['catalog_s']:.0f} s, {cat:.0f} MB; build {build_s:.0f} s in all")
        exact = _exact(vectors, queries)
        np.save(data_dir / "exact.npy", exact)
        np.save(data_dir / "query_vectors.npy", queries)
        if n <= args.brute_max:
            np.save(data_dir / "vectors.npy", vectors)
        (data_dir / "queries.json").write_text(
            json.dumps(texts, ensure_ascii=False), encoding="utf-8"
        )
        rate = _raw_index(vectors, data_dir / "raw.hnsw")
        print(f"  raw hnswlib (M 16, ef_construction 100): insert {rate:.0f} vectors/s (all cores)")
        del vectors
        gc.collect()
        ef_of = {"chroma": HNSW_TUNING["ef_search"], "hnsw": auto_ef_search(n)}
        for b in backends:
            label = "embedded Chroma" if b == "chroma" else "hnsw (graph over SQLite)"
            _print_serve(label, _run_serve(n, data_dir, args, ef_of[b], backend=b), ef_of[b])
        if n == args.chroma_server_at and "chroma" in backends:
            from tests.support.chroma_server import chroma_server

            with chroma_server(data_dir / "chroma") as url:
                served = _run_serve(n, data_dir, args, ef_of["chroma"], url)
                _print_serve("`chroma run` server", served, ef_of["chroma"])
        print(f"  load {_load()}; {time.perf_counter() - began:.0f} s since start", flush=True)
    if args.index_photos:
        print(f"\nindexing throughput ({args.index_photos} photos, load {_load()})", flush=True)
        _indexing(args.index_photos, work, args.old, runtimes, args.index_repeat)
    print(f"\ntotal run time {time.perf_counter() - began:.0f} s, load {_load()}")


if __name__ == "__main__":
    main()
