"""Query understanding, geo lookup, near-duplicate hashing and the offline describer: figures.

- parse: `RuleBasedUnderstanding.parse` per social text (gazetteer already loaded).
- geo: gazetteer load once, then reverse geocoding per position.
- dedup: pHash per photo over ../shared/eval/images; pairwise distances between distinct photos
  (false collapses at each threshold), of edited copies (60 % size, recoloured, JPEG q70) and of
  burst-like neighbours (the same photo cropped 2/4/6 % apart) — the figures behind
  `index.library.dedup.MAX_DISTANCE`.
- offline: `OfflineDescriber.describe` per photo (OCR + ImageNet tags), models loaded first.
Prints figures; asserts nothing.

    .venv/bin/python bench/bench_query.py [--photos 2000] [--offline 20]
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from index.describers.offline import OfflineDescriber  # noqa: E402
from index.library.dedup import hash_distance, perceptual_hash  # noqa: E402
from index.models import PhotoFile  # noqa: E402
from index.understanding import geo  # noqa: E402
from index.understanding.query import RuleBasedUnderstanding  # noqa: E402
from tests.support.core_fixtures import EVAL_DIR  # noqa: E402

MAX_PIXELS = 120_000_000  # PEITU_INDEXING__MAX_PIXELS by default
TEXTS = [
    "去年夏天在大理，蓝天白云",
    "今天和朋友去了杭州西湖边喝茶",
    "上周末的火锅真好吃",
    "国庆去了北京看升旗",
    "2024年5月的毕业旅行",
    "海边的日落太美了",
    "春节回家，一家人包饺子",
    "周末在上海外滩散步，夜景很美",
]


def _timed_ms(work: Callable[[], object], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        samples.append((time.perf_counter() - start) * 1000.0)
    return samples


def _summary(samples: list[float]) -> str:
    return f"median {statistics.median(samples):8.3f} ms   max {max(samples):8.3f} ms"


def bench_parse() -> None:
    start = time.perf_counter()
    geo.default_gazetteer()
    print(f"gazetteer load: {(time.perf_counter() - start) * 1000:.1f} ms")
    understanding = RuleBasedUnderstanding(now=datetime.now)
    samples = [s for text in TEXTS for s in _timed_ms(lambda t=text: understanding.parse(t), 50)]
    print(f"parse ({len(TEXTS)} texts x 50): {_summary(samples)}")
    gazetteer = geo.default_gazetteer()
    rng = random.Random(0)
    points = [(rng.uniform(20, 45), rng.uniform(98, 122)) for _ in range(2000)]
    samples = [
        s
        for lat, lon in points
        for s in _timed_ms(lambda a=lat, b=lon: gazetteer.place_at(a, b), 1)
    ]
    print(f"reverse geocode (2000 random points in China's box): {_summary(samples)}")


def _edited(image: Image.Image) -> Image.Image:
    small = image.resize((image.width * 6 // 10, image.height * 6 // 10), Image.Resampling.LANCZOS)
    recoloured = ImageEnhance.Brightness(ImageEnhance.Color(small).enhance(1.2)).enhance(1.08)
    out = io.BytesIO()
    recoloured.save(out, "JPEG", quality=70)
    return Image.open(io.BytesIO(out.getvalue()))


def _hash_of_image(image: Image.Image) -> str:
    out = io.BytesIO()
    image.convert("RGB").save(out, "PNG")
    path = Path("/dev/shm" if Path("/dev/shm").is_dir() else "/tmp") / "bench_query.png"
    path.write_bytes(out.getvalue())
    digest = perceptual_hash(path, max_pixels=MAX_PIXELS)
    assert digest is not None
    return digest


def bench_dedup(files: list[Path]) -> None:
    start = time.perf_counter()
    hashes = [perceptual_hash(f, max_pixels=MAX_PIXELS) for f in files]
    per_photo = (time.perf_counter() - start) * 1000.0 / len(files)
    print(f"pHash: {per_photo:.2f} ms a photo over {len(files)} photos")
    bits = np.array(
        [[int(c, 16) >> s & 1 for c in h or "0" * 16 for s in range(4)] for h in hashes]
    )
    distances = (bits[:, None, :] != bits[None, :, :]).sum(-1)[np.triu_indices(len(files), 1)]
    for threshold in (6, 8, 10, 12, 14):
        close = int((distances <= threshold).sum())
        print(f"  distinct pairs within {threshold:2d} bits: {close} of {len(distances)}")
    sample = random.Random(0).sample(files, min(100, len(files)))
    edited = [
        hash_distance(_hash_of_image(Image.open(f)), _hash_of_image(_edited(Image.open(f))))
        for f in sample
    ]
    print(f"  edited copies: max {max(edited)} bits, median {statistics.median(edited)}")
    for shift in (0.02, 0.04, 0.06):
        found = [_burst_distance(f, shift) for f in sample]
        within = sum(d <= 10 for d in found)
        print(
            f"  neighbours {shift:.0%} apart: median {statistics.median(found)} bits, {within}/{len(found)} within 10"
        )


def _burst_distance(path: Path, shift: float) -> int:
    image = Image.open(path).convert("RGB")
    dx = int(image.width * shift)
    left = image.crop((0, 0, image.width - dx, image.height))
    right = image.crop((dx, 0, image.width, image.height))
    return hash_distance(_hash_of_image(left), _hash_of_image(right))


def bench_offline(files: list[Path]) -> None:
    describer = OfflineDescriber(max_pixels=200_000_000)
    start = time.perf_counter()
    describer.describe_bytes(files[0].read_bytes())
    print(
        f"offline describer first call (loads OCR + tagger): {(time.perf_counter() - start):.2f} s"
    )
    photos = [PhotoFile(f.name, f, f.name, f.stat().st_size, 0.0, 0, 0) for f in files]
    samples = [s for p in photos for s in _timed_ms(lambda q=p: describer.describe(q), 1)]
    print(f"offline describe ({len(photos)} eval photos, 224 px): {_summary(samples)}")
    large = [_phone_sized(f) for f in files[:5]]
    samples = [
        s for data in large for s in _timed_ms(lambda d=data: describer.describe_bytes(d), 1)
    ]
    print(f"offline describe (5 photos upscaled to 4032x3024 JPEG): {_summary(samples)}")


def _phone_sized(path: Path) -> bytes:
    image = Image.open(path).convert("RGB").resize((4032, 3024), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--photos", type=int, default=2000, help="eval photos for the pHash figures"
    )
    parser.add_argument("--offline", type=int, default=20, help="photos for the offline describer")
    args = parser.parse_args()
    files = sorted((EVAL_DIR / "images").glob("*.jpg"))
    bench_parse()
    bench_dedup(files[: args.photos])
    if args.offline:
        bench_offline(files[: args.offline])


if __name__ == "__main__":
    main()
