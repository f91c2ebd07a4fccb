"""Core benchmark: embedding throughput and query latency on a 2,000-photo index.

Indexes ../shared/eval (captions 1-4 as descriptions, no vision calls) into a temporary data
folder, then times `PeiTu.recommend` (no rerank) beside a brute-force NumPy cosine baseline over
the same vectors, in one run. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_core.py [--queries 300]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from config import load_settings  # noqa: E402
from index.search.embed import SentenceTransformerEmbedder  # noqa: E402
from index.wiring import build_app  # noqa: E402

EVAL = REPO.parent / "shared" / "eval"


def _write_sidecar(path: Path) -> list[tuple[str, str]]:
    """Sidecar descriptions; returns (image name, query caption) pairs."""
    lines, queries = [], []
    for line in (EVAL / "captions.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        captions = record.get("captions_zh") or []
        if len(captions) == 5:
            name = Path(record["image"]).name
            lines.append(json.dumps({"image": name, "description": "".join(captions[:4])}))
            queries.append((name, captions[4]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return queries


def _percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    return f"median {statistics.median(ordered):7.2f} ms   p95 {p95:7.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sidecar = Path(tmp) / "descriptions.jsonl"
        queries = _write_sidecar(sidecar)[: args.queries]
        settings = load_settings(
            library=EVAL / "images",
            data_dir=Path(tmp) / "data",
            embedding={"model": str(REPO / "models" / "m3e-small")},
            rerank={"enabled": False},
            similarity_threshold=-1.0,
        )
        embedder = SentenceTransformerEmbedder(settings.embedding.model)
        embedder.load()
        app = build_app(settings, descriptions=sidecar, embedder=embedder)
        start = time.perf_counter()
        report = app.index()
        index_s = time.perf_counter() - start
        print(f"photos indexed: {report.embedded} (scanned {report.scanned}) in {index_s:.1f} s")

        texts = [d.description for d in app.catalog.latest_descriptions(app.store.ids()).values()]
        start = time.perf_counter()
        vectors = embedder.embed(texts)
        embed_s = time.perf_counter() - start
        print(
            f"embedding throughput: {len(texts) / embed_s:8.1f} descriptions/s ({len(texts)} in {embed_s:.2f} s)"
        )

        chroma_ms = []
        for _, query in queries:
            t0 = time.perf_counter()
            app.recommend(query, 10, rerank=False)
            chroma_ms.append((time.perf_counter() - t0) * 1000)
        numpy_ms = []
        for _, query in queries:
            t0 = time.perf_counter()
            q = embedder.embed([query])[0]
            np.argsort(-(vectors @ q))[:10]
            numpy_ms.append((time.perf_counter() - t0) * 1000)
        print(
            f"query latency, PeiTu.recommend (Chroma HNSW, no rerank): {_percentiles(chroma_ms)}  n={len(queries)}"
        )
        print(
            f"query latency, baseline (embed + NumPy brute force):     {_percentiles(numpy_ms)}  n={len(queries)}"
        )


if __name__ == "__main__":
    main()
