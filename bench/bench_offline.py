"""The offline describer's cost per photo, stage by stage, in three set-ups side by side in one
run: without the object detector (the baseline), with it, and with it and the face models (the
default). On the ../shared/eval photos, one photo at a time in this process (the indexer runs
four at once; each model uses one thread either way).

Prints per set-up the wall and CPU milliseconds a photo for the whole describer and for each
stage (ImageNet tags, detector, faces, OCR), how many people were boxed and how many of them the
faces told apart, and the words they were told by. Asserts nothing.

    .venv/bin/python bench/bench_offline.py [--photos 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from config.settings import (  # noqa: E402
    DEFAULT_DETECTOR_MODEL,
    DEFAULT_FACE_ATTRIBUTES_MODEL,
    DEFAULT_FACE_MODEL,
    OfflineSettings,
)
from index.describers.detect import Detection, OnnxDetector  # noqa: E402
from index.describers.faces import OnnxFaceReader  # noqa: E402
from index.describers.offline import ImageNetTagger, OfflineDescriber, RapidTextReader  # noqa: E402

EVAL_IMAGES = REPO.parent / "shared" / "eval" / "images"
T = TypeVar("T")


class Clock:
    """Wall and CPU seconds spent per stage."""

    def __init__(self) -> None:
        self.wall: defaultdict[str, float] = defaultdict(float)
        self.cpu: defaultdict[str, float] = defaultdict(float)

    def timed(self, stage: str, call: Callable[[], T]) -> T:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return call()
        finally:
            self.wall[stage] += time.perf_counter() - wall
            self.cpu[stage] += time.process_time() - cpu


class TimedTagger:
    def __init__(self, inner: ImageNetTagger, clock: Clock) -> None:
        self._inner, self._clock = inner, clock

    def tags(self, image: Any) -> list[tuple[str, float]]:
        return self._clock.timed("tags", lambda: self._inner.tags(image))


class TimedReader:
    def __init__(self, inner: RapidTextReader, clock: Clock) -> None:
        self._inner, self._clock = inner, clock

    def read(self, image: Any) -> list[str]:
        return self._clock.timed("ocr", lambda: self._inner.read(image))


class TimedDetector:
    def __init__(self, inner: OnnxDetector, clock: Clock) -> None:
        self._inner, self._clock = inner, clock

    def detect(self, image: Any) -> list[Detection]:
        return self._clock.timed("detector", lambda: self._inner.detect(image))


class TimedFaces:
    def __init__(self, inner: OnnxFaceReader, clock: Clock) -> None:
        self._inner, self._clock = inner, clock
        self.people = 0
        self.words: Counter[str] = Counter()

    def read(self, image: Any, detections: list[Detection]) -> list[Detection]:
        told = self._clock.timed("faces", lambda: self._inner.read(image, detections))
        people = [d for d in told if d.label == "person"]
        self.people += len(people)
        self.words.update(d.who for d in people if d.who)
        return told


def run(name: str, photos: list[Path], detector: bool, faces: bool) -> None:
    clock = Clock()
    tagger = ImageNetTagger()
    reader = RapidTextReader()
    timed_faces = None
    kwargs: dict[str, Any] = {}
    if detector:
        model = OnnxDetector(
            DEFAULT_DETECTOR_MODEL, min_score=OfflineSettings().min_detection_score
        )
        kwargs["detector"] = TimedDetector(model, clock)
    if faces:
        inner = OnnxFaceReader(DEFAULT_FACE_MODEL, DEFAULT_FACE_ATTRIBUTES_MODEL)
        timed_faces = kwargs["faces"] = TimedFaces(inner, clock)
    describer = OfflineDescriber(
        max_pixels=120_000_000,
        tagger=TimedTagger(tagger, clock),
        reader=TimedReader(reader, clock),
        **kwargs,
    )
    describer.describe_bytes(photos[0].read_bytes())  # load every model before timing
    clock.wall.clear()
    clock.cpu.clear()
    if timed_faces:
        timed_faces.people, timed_faces.words = 0, Counter()
    walls, cpus = [], []
    for path in photos:
        data = path.read_bytes()
        wall, cpu = time.perf_counter(), time.process_time()
        describer.describe_bytes(data)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    count = len(photos)
    stages = " ".join(
        f"{stage} {clock.wall[stage] / count * 1000:.0f}/{clock.cpu[stage] / count * 1000:.0f}"
        for stage in ("tags", "detector", "faces", "ocr")
        if stage in clock.wall
    )
    print(
        f"{name:<26} whole {statistics.fmean(walls) * 1000:6.1f} ms wall "
        f"{statistics.fmean(cpus) * 1000:6.1f} ms CPU (p95 wall "
        f"{sorted(walls)[int(0.95 * (count - 1))] * 1000:.0f} ms) | stages wall/CPU ms: {stages}"
    )
    if timed_faces:
        told = sum(timed_faces.words.values())
        print(
            f"{'':<26} people boxed {timed_faces.people}, told apart {told} "
            f"({told / max(1, timed_faces.people):.0%}): {dict(timed_faces.words.most_common())}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=200)
    args = parser.parse_args()
    missing = [m for m in (DEFAULT_DETECTOR_MODEL, DEFAULT_FACE_MODEL) if not m.is_file()]
    if missing or not EVAL_IMAGES.is_dir():
        sys.exit(f"needs {EVAL_IMAGES} and the models of scripts/fetch_detector.sh")
    every = sorted(EVAL_IMAGES.glob("*.jpg"))
    step = max(1, len(every) // args.photos)
    photos = every[::step][: args.photos]  # spread over the set, the same ones in each set-up
    print(f"{len(photos)} eval photos, one at a time, models on one thread each")
    run("without detector (base)", photos, detector=False, faces=False)
    run("detector", photos, detector=True, faces=False)
    run("detector + faces (default)", photos, detector=True, faces=True)


if __name__ == "__main__":
    main()
