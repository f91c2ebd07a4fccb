"""`peitu eval`: Recall@k, MRR and nDCG of the real recommend path on captioned photos.

The evaluation set is a JSONL of photos with human Chinese captions (../shared/eval). A protocol
turns each photo's captions into a description (what the describer would have written) and a
query (what a user would type): `rich` describes with captions 1-4 and asks with the 5th,
`short` describes with caption 1 and asks with caption 2. Photos without Chinese captions stay
in the gallery as distractors, described by whatever text they carry, and are never asked for.

With `describer="offline"` the photos are described by the offline describer (no vision model,
no LLM) instead of by their captions; the captions only give the queries. That run also
counts the photos whose description says nothing about the picture (`unknown_descriptions`)
and times the describing.

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
    from index.ports import Embedder
    from index.service import PeiTu

log = logging.getLogger(__name__)

EvalProtocol = Literal["rich", "short"]
PROTOCOLS: tuple[EvalProtocol, ...] = ("rich", "short")
EvalDescriber = Literal["captions", "offline"]
DESCRIBERS: tuple[EvalDescriber, ...] = ("captions", "offline")
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
    describer: str = "captions"  # "captions", or the offline describer's name
    # share of off-domain texts answered "nothing fits" and of real queries still answered
    nothing_fits: dict[str, Any] = field(default_factory=dict)

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
    describer: EvalDescriber = "captions"  # who writes the descriptions
    max_queries: int | None = None  # ask only this many queries, evenly spread; None = all
    offdomain: Path | None = None  # texts no photo fits, one a line: the "nothing fits" report


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
    """The user's settings with everything stateful moved into `work` and the threshold off
    (the embedding model's onnxruntime export stays where the user's runs keep it)."""
    from index.wiring import encoder_exports

    exports = encoder_exports(settings)
    return settings.model_copy(
        update={
            "data_dir": work / "data",
            "embedding": settings.embedding.model_copy(update={"export_dir": str(exports)}),
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
    from index.wiring import build_app

    images = read_eval_set(request.captions, request.limit)
    retrieval = variant_retrieval(settings, request.variant)
    started = time.perf_counter()
    with _work_dir(request.work_dir) as work:
        library, sidecar, queries = prepare_library(images, request.images, request.protocol, work)
        queries = spread(queries, request.max_queries)
        config = eval_settings(settings, work, library, retrieval, request.rerank)
        offline = request.describer == "offline"
        app = build_app(
            config,
            descriptions=None if offline else sidecar,
            embedder=embedder,
            describer="offline" if offline else "auto",
        )
        try:
            run = _index_and_ask(app, queries, request.rerank, started)
            if offline:
                run.counts["unknown_descriptions"] = _unknown_descriptions(app)
            offdomain = _offdomain_report(app, request.offdomain, run.answered)
        finally:
            app.close()
    run.counts |= {"images": len(images), "distractors": sum(not i.captions for i in images)}
    return EvalReport(
        protocol=request.protocol,
        variant=request.variant or "configured",
        metrics=retrieval_metrics(run.ranks),
        counts=run.counts,
        timing=_timing(run.index_s, run.latencies, time.perf_counter() - started)
        | run.extra_timing,
        retrieval=retrieval.model_dump(),
        rerank=request.rerank,
        describer=_describer_name(settings, request.describer),
        nothing_fits=offdomain,
    )


def spread(queries: list[EvalQuery], count: int | None) -> list[EvalQuery]:
    """`count` queries taken evenly across the list (all of them when None or more)."""
    if count is None or count >= len(queries):
        return queries
    step = len(queries) / count
    return [queries[int(i * step)] for i in range(count)]


def _describer_name(settings: Settings, describer: EvalDescriber) -> str:
    if describer == "captions":
        return "captions"
    model = settings.offline.detector_model
    return f"offline + {Path(model).name}" if model else "offline without detector"


def offline_baseline(settings: Settings) -> Settings:
    """The settings of the offline describer as it was before its object detector."""
    offline = settings.offline.model_copy(update={"detector_model": ""})
    return settings.model_copy(update={"offline": offline})


def _unknown_descriptions(app: PeiTu) -> int:
    """Photos whose stored description says nothing about what the picture shows."""
    from index.describers.offline import says_nothing

    photo_ids = set(app.catalog.files().values())
    stored = app.catalog.latest_descriptions(photo_ids)
    return sum(pid not in stored or says_nothing(stored[pid].description) for pid in photo_ids)


@dataclass
class _Run:
    ranks: list[int | None]
    latencies: list[float]
    index_s: float
    counts: dict[str, int]
    extra_timing: dict[str, float] = field(default_factory=dict)
    answered: list[bool] = field(default_factory=list)  # would get photos by default


def read_offdomain(path: Path) -> list[str]:
    """Texts no photo of the eval set fits, one a line (blank lines and # comments skipped)."""
    if not path.is_file():
        raise EvalSetInvalid(f"off-domain file not found: {path}")
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _offdomain_report(app: PeiTu, path: Path | None, answered: Sequence[bool]) -> dict[str, Any]:
    """How often "nothing fits" is right: off-domain texts without photos, real ones with."""
    if path is None:
        return {}
    texts = read_offdomain(path)
    empty = [t for t in texts if app.recommend(t, TOP_K, rerank=False).nothing_fits]
    return {
        "offdomain": len(texts),
        "offdomain_no_photos": round(len(empty) / len(texts), 4) if texts else 0.0,
        "real_with_photos": round(sum(answered) / len(answered), 4) if answered else 0.0,
        "offdomain_answered": [t for t in texts if t not in set(empty)],
    }


def _index_and_ask(app: PeiTu, queries: Sequence[EvalQuery], rerank: bool, started: float) -> _Run:
    describing = _PhaseClock("describe")
    indexed = app.index("rebuild", progress=describing)
    index_s = time.perf_counter() - started
    ranks, latencies, answered = _rank_queries(app, queries, rerank)
    counts = {"gallery": app.store.count(), "queries": len(queries), "index_failed": indexed.failed}
    run = _Run(ranks, latencies, index_s, counts, answered=answered)
    if describing.count:
        run.extra_timing |= {
            "describe_s": round(describing.seconds, 2),
            "describe_ms_per_photo": round(1000 * describing.seconds / describing.count, 1),
            "describe_cpu_ms_per_photo": round(1000 * describing.cpu_s / describing.count, 1),
        }
    return run


class _PhaseClock:
    """A progress callback that measures one indexing phase from its first to its last call:
    wall time, and the process's CPU time (all threads), which a busy machine changes less."""

    def __init__(self, phase: str) -> None:
        self._phase = phase
        self._start: tuple[float, float] | None = None
        self.seconds = self.cpu_s = 0.0
        self.count = 0

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase != self._phase:
            return
        now = (time.perf_counter(), time.process_time())
        self._start = self._start or now
        self.seconds, self.cpu_s = now[0] - self._start[0], now[1] - self._start[1]
        self.count = done


def _rank_queries(
    app: PeiTu, queries: Sequence[EvalQuery], rerank: bool
) -> tuple[list[int | None], list[float], list[bool]]:
    """Rank of each query's photo in `PeiTu.recommend` (top 10, the closest even when none
    fits), each query's time in ms, and whether it would get photos by default."""
    photo_ids = app.catalog.files()  # rel_path -> photo_id; the library is flat
    ranks: list[int | None] = []
    latencies: list[float] = []
    answered: list[bool] = []
    for query in queries:
        start = time.perf_counter()
        result = app.recommend(query.text, TOP_K, rerank=rerank, closest=True)
        latencies.append((time.perf_counter() - start) * 1000.0)
        found = [r.photo_id for r in result.results]
        target = photo_ids.get(query.file_name)
        ranks.append(found.index(target) + 1 if target in found else None)
        answered.append(not result.nothing_fits)
    return ranks, latencies, answered


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
