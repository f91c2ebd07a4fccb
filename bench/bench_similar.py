"""Similar photos by pixels (the visual index) beside the old path (describe the image offline,
then search the text index by that description), on the ../shared/eval photos.

The library is the eval photos with captions 1–4 as their descriptions (the `rich` protocol of
`peitu eval`: the best descriptions the old path could have). Each query is an edited copy of a
library photo (centre crop 80 %, 60 % size, 10 % brighter, JPEG q55). For both paths, in one
run: how often the original comes back first (and is labelled as the same photo), the share of
the other top-5 results that show the same kind of scene as the query (dog / water / snow /
bike / child / ball / mountain / street, judged by keywords in the five human captions),
query latency (median, p95), and for the visual index its indexing cost per photo (wall and
CPU). Prints figures; asserts nothing.

    .venv/bin/python bench/bench_similar.py [--photos 2000] [--queries 100] [--threads N]

On a shared machine the CPU time per photo is the figure to trust: wall time there mostly
measures the other processes (PyTorch's two threads then also spin waiting for each other,
so `--threads 1` is cheaper in CPU).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cli.evaluation import EvalImage, prepare_library, read_eval_set  # noqa: E402
from config import load_settings  # noqa: E402
from index.describers.offline import OfflineDescriber  # noqa: E402
from index.models import RecommendResult  # noqa: E402
from index.service import PeiTu  # noqa: E402
from index.visual.search import SAME_MOMENT  # noqa: E402
from index.wiring import build_app  # noqa: E402
from tests.support.edits import edited_copy  # noqa: E402

EVAL_DIR = REPO.parent / "shared" / "eval"
SCENES: dict[str, tuple[str, ...]] = {
    "dog": ("狗",),
    "water": ("水", "海", "湖", "河", "游泳", "浪", "沙滩", "海滩"),
    "snow": ("雪",),
    "bike": ("自行车", "单车", "骑车", "骑自行"),
    "child": ("孩", "儿童", "宝宝", "婴儿"),
    "ball": ("球",),
    "mountain": ("山", "岩", "攀"),
    "street": ("街", "城市", "马路"),
}


def scenes_of(image: EvalImage) -> frozenset[str]:
    text = "".join(image.captions)
    return frozenset(kind for kind, words in SCENES.items() if any(w in text for w in words))


class VisualTimer:
    """Progress callback that clocks the visual phase (wall and this process's CPU)."""

    def __init__(self) -> None:
        self.started: tuple[float, float] | None = None
        self.ended: tuple[float, float] | None = None
        self.photos = 0

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = (time.perf_counter(), time.process_time())
        if phase == "visual" and self.started is None:
            self.started = now
        if phase == "visual":
            self.ended, self.photos = now, done


def _percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    return f"median {statistics.median(ordered):7.1f} ms  p95 {p95:7.1f} ms"


def _ask(
    name: str,
    search: Callable[[bytes], RecommendResult],
    queries: list[tuple[EvalImage, bytes]],
    ids: dict[str, str],
    scenes: dict[str, frozenset[str]],
) -> None:
    latencies: list[float] = []
    shares: list[float] = []
    first = labelled = 0
    for image, data in queries:
        start = time.perf_counter()
        result = search(data)
        latencies.append((time.perf_counter() - start) * 1000)
        original = ids[image.file_name]
        found = result.results[:5]
        if found and found[0].photo_id == original:
            first += 1
            labelled += found[0].reason.startswith(SAME_MOMENT)
        wanted = scenes_of(image)
        others = [r for r in found if r.photo_id != original]
        if wanted and others:
            same = sum(bool(scenes.get(r.path, frozenset()) & wanted) for r in others)
            shares.append(same / len(others))
    n = len(queries)
    share = statistics.mean(shares) if shares else float("nan")
    print(
        f"{name:34s} original first {first / n:6.1%} (labelled {labelled / n:6.1%})  "
        f"same scene among the others {share:6.1%} ({len(shares)} queries)  "
        f"{_percentiles(latencies)}"
    )


def _base_rate(images: list[EvalImage], queries: list[tuple[EvalImage, bytes]]) -> float:
    """Share of random photos sharing a scene with the query: what chance alone gives."""
    rates = []
    for image, _ in queries:
        wanted = scenes_of(image)
        if wanted:
            rates.append(statistics.mean(bool(scenes_of(other) & wanted) for other in images))
    return statistics.mean(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--model", default=str(REPO / "models" / "m3e-small"))
    parser.add_argument(
        "--threads", type=int, help="PyTorch threads (default: its own choice, one per core)"
    )
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    images = [i for i in read_eval_set(EVAL_DIR / "captions.jsonl", args.photos) if i.captions]
    with tempfile.TemporaryDirectory(prefix="peitu-bench-similar-") as work:
        library, sidecar, _ = prepare_library(images, EVAL_DIR / "images", "rich", Path(work))
        settings = load_settings(
            library=library,
            data_dir=Path(work) / "data",
            embedding={"model": args.model},
            rerank={"enabled": False},
            similarity_threshold=-1.0,
        )
        app = build_app(settings, descriptions=sidecar)
        _index(app, len(images))
        # The old path describes the query image: offline here (no vision model in a bench).
        app.describer = OfflineDescriber(max_pixels=settings.indexing.max_pixels)
        _compare(app, images, args.queries)
        app.close()


def _index(app: PeiTu, count: int) -> None:
    timer = VisualTimer()
    start = time.perf_counter()
    report = app.index(progress=timer)
    total = time.perf_counter() - start
    assert timer.started is not None and timer.ended is not None
    wall = (timer.ended[0] - timer.started[0]) / max(1, timer.photos) * 1000
    cpu = (timer.ended[1] - timer.started[1]) / max(1, timer.photos) * 1000
    print(
        f"indexed {count} photos in {total:.0f} s; visual phase {report.visual_embedded} photos: "
        f"{wall:.1f} ms a photo wall, {cpu:.1f} ms CPU (decode + pHash + EfficientNet-Lite0, "
        f"batch 16, {_torch_threads()} PyTorch threads); load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def _compare(app: PeiTu, images: list[EvalImage], count: int) -> None:
    chosen = random.Random(14).sample(images, min(count, len(images)))
    library = app.library
    assert library is not None
    queries = [(i, edited_copy((library / i.file_name).read_bytes())) for i in chosen]
    ids = app.catalog.files()
    scenes = {i.file_name: scenes_of(i) for i in images}
    print(
        f"{len(queries)} queries (edited copies); a random photo shares a scene with the query "
        f"{_base_rate(images, queries):.1%} of the time"
    )
    app.similar_to_image(queries[0][1])  # warm both paths up
    app.similar_by_description(queries[0][1])
    _ask("visual (EfficientNet-Lite0 + ORB)", app.similar_to_image, queries, ids, scenes)
    _ask("baseline: describe offline, search", app.similar_by_description, queries, ids, scenes)


if __name__ == "__main__":
    main()
