"""`peitu eval`: Recall@k, MRR and nDCG of the real recommend path on captioned photos.

The evaluation set is a JSONL of photos with human Chinese captions (../shared/eval). A protocol
turns each photo's captions into a description (what the describer would have written) and a
query (what a user would type): `rich` describes with captions 1-4 and asks with the 5th,
`short` describes with caption 1 and asks with caption 2. Photos without Chinese captions stay
in the gallery as distractors, described by whatever text they carry, and are never asked for.

Everything happens in a working folder of its own (a temporary one by default): a library of
links to the images, the sidecar descriptions file, the catalog and an embedded Chroma. The
user's data folder and vector server are never touched.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from config import Settings
from config.settings import ChromaSettings, RetrievalSettings
from index.errors import PeiTuError

if TYPE_CHECKING:  # chromadb & co. load only when an evaluation runs, not for `peitu --help`
    from index.app import PeiTu
    from index.ports import Embedder

log = logging.getLogger(__name__)

EvalProtocol = Literal["rich", "short"]
PROTOCOLS: tuple[EvalProtocol, ...] = ("rich", "short")
CUTOFFS = (1, 5, 10)
TOP_K = 10

# Named first stages to compare (overrides of `Settings.retrieval`); "configured" = as set.
VARIANTS: dict[str, dict[str, Any]] = {
    "whole": {"document_encoding": "whole", "keyword_weight": 0.0, "strip_filler": False},
    "centroid": {"document_encoding": "centroid", "keyword_weight": 0.0},
    "mixture": {"document_encoding": "mixture", "keyword_weight": 0.0},
    "hybrid-whole": {"document_encoding": "whole", "keyword_weight": 0.2},
    "hybrid-centroid": {"document_encoding": "centroid", "keyword_weight": 0.2},
    "hybrid": {"document_encoding": "mixture", "keyword_weight": 0.2},
    "hybrid-rrf": {"document_encoding": "mixture", "keyword_weight": 0.3, "fusion": "rrf"},
}


class EvalSetInvalid(PeiTuError):
    """The captions file or images folder cannot be used; the message says which and why."""


@dataclass(frozen=True)
class EvalImage:
    file_name: str
    captions: tuple[str, ...]  # Chinese captions; empty for a distractor
    other_text: str = ""  # what a distractor is described by


@dataclass(frozen=True)
class EvalQuery:
    file_name: str
    text: str


@dataclass
class EvalReport:
    protocol: str
    variant: str
    metrics: dict[str, float]
    counts: dict[str, int]
    timing: dict[str, float]
    retrieval: dict[str, Any] = field(default_factory=dict)
    rerank: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- metrics (ranks are 1-based positions of the one relevant photo; None = not in the list) --
def recall_at(ranks: Sequence[int | None], k: int) -> float:
    """Share of queries whose photo is in the top k."""
    return _mean([1.0 if r is not None and r <= k else 0.0 for r in ranks])


def mean_reciprocal_rank(ranks: Sequence[int | None]) -> float:
    """Mean of 1/rank, 0 where the photo was not returned (MRR@list length)."""
    return _mean([1.0 / r if r is not None else 0.0 for r in ranks])


def ndcg_at(ranks: Sequence[int | None], k: int) -> float:
    """nDCG@k with one relevant photo per query: 1/log2(rank+1) within the top k, else 0."""
    return _mean([1.0 / math.log2(r + 1) if r is not None and r <= k else 0.0 for r in ranks])


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def retrieval_metrics(ranks: Sequence[int | None]) -> dict[str, float]:
    """Recall@1/5/10, MRR@10 and nDCG@10, rounded to 4 places."""
    out = {f"recall@{k}": recall_at(ranks, k) for k in CUTOFFS}
    out["mrr@10"] = mean_reciprocal_rank(
        [r if r is not None and r <= TOP_K else None for r in ranks]
    )
    out["ndcg@10"] = ndcg_at(ranks, TOP_K)
    return {name: round(value, 4) for name, value in out.items()}


# --- the evaluation set ----------------------------------------------------------------------
def read_eval_set(captions_file: Path, limit: int | None = None) -> list[EvalImage]:
    """Captioned photos (the first `limit` of them) followed by every distractor."""
    if not captions_file.is_file():
        raise EvalSetInvalid(f"captions file not found: {captions_file}")
    captioned: list[EvalImage] = []
    distractors: list[EvalImage] = []
    with captions_file.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                image = _parse_record(line, captions_file, number)
                (captioned if image.captions else distractors).append(image)
    return captioned[:limit] + distractors


def _parse_record(line: str, path: Path, number: int) -> EvalImage:
    try:
        record = json.loads(line)
        name = Path(str(record["image"])).name
        captions = tuple(str(c).strip() for c in record.get("captions_zh", []) if str(c).strip())
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise EvalSetInvalid(f"{path}:{number}: not an eval record ({error})") from None
    other = " ".join(record.get("captions_en") or []) or str(record.get("doc_title") or name)
    return EvalImage(name, captions, other)


def protocol_text(image: EvalImage, protocol: EvalProtocol) -> tuple[str, str | None]:
    """(description, query) of one photo; a photo with too few captions is only described."""
    caps = image.captions
    if protocol == "rich":
        return ("".join(caps[:4]), caps[4]) if len(caps) >= 5 else (_fallback(image), None)
    return (caps[0], caps[1]) if len(caps) >= 2 else (_fallback(image), None)


def _fallback(image: EvalImage) -> str:
    return "".join(image.captions) or image.other_text


def prepare_library(
    images: Sequence[EvalImage], images_dir: Path, protocol: EvalProtocol, work: Path
) -> tuple[Path, Path, list[EvalQuery]]:
    """A library of links to the images, its descriptions file, and the queries."""
    library, sidecar = work / "library", work / "descriptions.jsonl"
    library.mkdir(parents=True, exist_ok=True)
    queries, lines = [], []
    for image in images:
        source = images_dir / image.file_name
        if not source.is_file():
            raise EvalSetInvalid(f"image listed in the captions file not found: {source}")
        (library / image.file_name).symlink_to(source.resolve())
        description, query = protocol_text(image, protocol)
        lines.append(
            json.dumps({"image": image.file_name, "description": description}, ensure_ascii=False)
        )
        if query is not None:
            queries.append(EvalQuery(image.file_name, query))
    sidecar.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return library, sidecar, queries


# --- the run ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalRequest:
    captions: Path
    images: Path
    protocol: EvalProtocol = "rich"
    variant: str | None = None  # a key of VARIANTS; None = the configured first stage
    limit: int | None = None  # captioned photos to take (distractors are always added)
    rerank: bool = False
    work_dir: Path | None = None  # default: a temporary folder, removed afterwards


def variant_retrieval(settings: Settings, variant: str | None) -> RetrievalSettings:
    """The first-stage settings of a named variant (validated), or the configured ones."""
    if variant is None:
        return settings.retrieval
    if variant not in VARIANTS:
        raise EvalSetInvalid(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    return RetrievalSettings(**(settings.retrieval.model_dump() | VARIANTS[variant]))


def eval_settings(
    settings: Settings, work: Path, library: Path, retrieval: RetrievalSettings, rerank: bool
) -> Settings:
    """The user's settings with everything stateful moved into `work` and the threshold off."""
    return settings.model_copy(
        update={
            "data_dir": work / "data",
            "library": library,
            "similarity_threshold": -1.0,
            "top_k_initial": max(settings.top_k_initial, TOP_K),
            "top_k_final": TOP_K,
            "chroma": ChromaSettings(url="", collection="peitu_eval"),
            "rerank": settings.rerank.model_copy(update={"enabled": rerank}),
            "retrieval": retrieval,
            # The library is links to the evaluation images, which live elsewhere.
            "indexing": settings.indexing.model_copy(update={"follow_external_links": True}),
        }
    )


@contextmanager
def _work_dir(path: Path | None) -> Iterator[Path]:
    if path is None:
        with tempfile.TemporaryDirectory(prefix="peitu-eval-") as temporary:
            yield Path(temporary)
        return
    if path.exists() and any(path.iterdir()):
        raise EvalSetInvalid(f"the eval working folder must be new or empty: {path}")
    path.mkdir(parents=True, exist_ok=True)
    yield path


def run_evaluation(
    settings: Settings, request: EvalRequest, embedder: Embedder | None = None
) -> EvalReport:
    """Index the eval images in a working folder, ask every query, measure the rankings."""
    from index.app import build_app

    images = read_eval_set(request.captions, request.limit)
    retrieval = variant_retrieval(settings, request.variant)
    started = time.perf_counter()
    with _work_dir(request.work_dir) as work:
        library, sidecar, queries = prepare_library(images, request.images, request.protocol, work)
        config = eval_settings(settings, work, library, retrieval, request.rerank)
        app = build_app(config, descriptions=sidecar, embedder=embedder)
        try:
            run = _index_and_ask(app, queries, request.rerank, started)
        finally:
            app.close()
    run.counts |= {"images": len(images), "distractors": sum(not i.captions for i in images)}
    return EvalReport(
        protocol=request.protocol,
        variant=request.variant or "configured",
        metrics=retrieval_metrics(run.ranks),
        counts=run.counts,
        timing=_timing(run.index_s, run.latencies, time.perf_counter() - started),
        retrieval=retrieval.model_dump(),
        rerank=request.rerank,
    )


@dataclass
class _Run:
    ranks: list[int | None]
    latencies: list[float]
    index_s: float
    counts: dict[str, int]


def _index_and_ask(app: PeiTu, queries: Sequence[EvalQuery], rerank: bool, started: float) -> _Run:
    indexed = app.index("rebuild")
    index_s = time.perf_counter() - started
    ranks, latencies = _rank_queries(app, queries, rerank)
    counts = {"gallery": app.store.count(), "queries": len(queries), "index_failed": indexed.failed}
    return _Run(ranks, latencies, index_s, counts)


def _rank_queries(
    app: PeiTu, queries: Sequence[EvalQuery], rerank: bool
) -> tuple[list[int | None], list[float]]:
    """Rank of each query's photo in `PeiTu.recommend` (top 10), and each query's time in ms."""
    photo_ids = app.catalog.files()  # rel_path -> photo_id; the library is flat
    ranks: list[int | None] = []
    latencies: list[float] = []
    for query in queries:
        start = time.perf_counter()
        result = app.recommend(query.text, TOP_K, rerank=rerank)
        latencies.append((time.perf_counter() - start) * 1000.0)
        found = [r.photo_id for r in result.results]
        target = photo_ids.get(query.file_name)
        ranks.append(found.index(target) + 1 if target in found else None)
    return ranks, latencies


def _timing(index_s: float, latencies: Sequence[float], total_s: float) -> dict[str, float]:
    ordered = sorted(latencies) or [0.0]
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "index_s": round(index_s, 2),
        "queries_s": round(sum(latencies) / 1000.0, 2),
        "query_ms_median": round(statistics.median(ordered), 2),
        "query_ms_p95": round(p95, 2),
        "total_s": round(total_s, 2),
    }
