"""First-stage benchmark: the old first stage (whole-description vector, dense only) beside the
new default (`RetrievalSettings()`), on the ../shared/eval photos with the `rich` protocol.

For each: embedding throughput of the document encoding (descriptions/s over all photos), the
index run, then query latency of `PeiTu.recommend` without rerank over N queries: the first
stage alone (embed + search, fusion included) and the whole call. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_retrieval.py [--photos 2000] [--queries 300] [--model PATH] [--all]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cli.evaluation import (  # noqa: E402
    eval_settings,
    prepare_library,
    protocol_text,
    read_eval_set,
)
from config import load_settings  # noqa: E402
from config.settings import RetrievalSettings  # noqa: E402
from index.search.embed import SentenceTransformerEmbedder  # noqa: E402
from index.search.retrieval import DocumentEncoder  # noqa: E402
from index.wiring import build_app  # noqa: E402

EVAL_DIR = REPO.parent / "shared" / "eval"
OLD = RetrievalSettings(document_encoding="whole", keyword_weight=0.0, strip_filler=False)


def _percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    return f"median {statistics.median(ordered):6.1f} ms  p95 {p95:6.1f} ms"


def _throughput(
    embedder: SentenceTransformerEmbedder, stage: RetrievalSettings, texts: list[str]
) -> float:
    encoder = DocumentEncoder(stage.document_encoding, stage.whole_weight)
    start = time.perf_counter()
    encoder.encode(embedder, texts)
    return len(texts) / (time.perf_counter() - start)


def _bench_stage(
    name: str,
    stage: RetrievalSettings,
    args: argparse.Namespace,
    embedder: SentenceTransformerEmbedder,
) -> None:
    images = read_eval_set(EVAL_DIR / "captions.jsonl", args.photos)
    descriptions = [protocol_text(image, "rich")[0] for image in images]
    rate = _throughput(embedder, stage, descriptions)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        library, sidecar, queries = prepare_library(images, EVAL_DIR / "images", "rich", work)
        settings = eval_settings(load_settings(), work, library, stage, rerank=False)
        app = build_app(settings, descriptions=sidecar, embedder=embedder)
        start = time.perf_counter()
        app.index()
        index_s = time.perf_counter() - start
        first_stage, whole_call = [], []
        app.recommend(queries[0].text, 10, rerank=False)  # warm-up (keyword index, caches)
        for query in queries[: args.queries]:
            start = time.perf_counter()
            result = app.recommend(query.text, 10, rerank=False)
            whole_call.append((time.perf_counter() - start) * 1000.0)
            first_stage.append(result.timings_ms["embed"] + result.timings_ms["search"])
        app.close()
    print(f"{name}  [{stage.document_encoding}, keyword weight {stage.keyword_weight}]")
    print(
        f"  encode  {rate:7.1f} descriptions/s over {len(descriptions)}   index run {index_s:6.1f} s"
    )
    print(f"  first stage  {_percentiles(first_stage)}   recommend  {_percentiles(whole_call)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--photos", type=int, default=2000, help="captioned photos (+9 distractors)"
    )
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--model", default=str(REPO / "models" / "m3e-small"))
    parser.add_argument("--all", action="store_true", help="also the centroid and hybrid stages")
    args = parser.parse_args()
    embedder = SentenceTransformerEmbedder(args.model)
    embedder.load()
    print(f"model {embedder.model_name}, {args.photos} photos, {args.queries} queries")
    _bench_stage("old", OLD, args, embedder)
    _bench_stage("new (default)", RetrievalSettings(), args, embedder)
    if args.all:
        _bench_stage("centroid", RetrievalSettings(document_encoding="centroid"), args, embedder)
        _bench_stage("hybrid", RetrievalSettings(keyword_weight=0.2), args, embedder)


if __name__ == "__main__":
    main()
