"""Time and place words at scale: a dated, geotagged library of 6,000 photos in which each post
has ~100 fitting photos, two of them planted in the time or place the post names.

The library (built once into `--work-dir`, reused by later runs): every captioned photo of
../shared/eval three times — as it is, mirrored, and cropped to its centre (perceptual hashes
10+ bits apart, so no copy folds into another) — each copy with EXIF time and GPS written by
Pillow and a description made of four of its five captions (`peitu index --descriptions`). A
photo about no post is dated any time over 2023-2026 and placed in 大理 one time in five, so
the windows hold hundreds of photos; a photo about a post (it fits it, or its captions name
what the post is about) is dated outside the posts' window and placed elsewhere, except the two planted photos of each post (their description
names what the post is about): of last summer (June–August 2025; "now" is 2026-11-23) for a
time post, at 大理 for a place post, both for a post that names both.

Each post (`POSTS`) has its fitting photos judged on the English captions (as in
`bench_answers.py`) and is asked three ways, for this checkout and (with `--baseline`) another
one side by side, each by its own interpreter: without the time/place words (P@5), with them
(P@5), and how many of the planted photos come back in the top 5 (the figure the issue asks
≥ 90% of). Prints figures; asserts nothing. Reads ../shared/eval at run time.

    .venv/bin/python bench/bench_time_place.py --work-dir /tmp/dated [--baseline /work/main]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
EVAL_DIR = Path(os.environ.get("PEITU_EVAL_DIR", HERE.parents[1] / "shared" / "eval"))
NOW = datetime(2026, 11, 23, 10, 30)  # 去年夏天 = June–August 2025
SUMMER = (datetime(2025, 6, 1), datetime(2025, 9, 1))
DALI = (25.6065, 100.2676)
ELSEWHERE = [(30.2741, 120.1551), (39.9042, 116.4074), (31.2304, 121.4737), (23.1291, 113.2644)]
VARIANTS = ("plain", "mirror", "crop")
PLANTED_PER_POST = 2


@dataclass(frozen=True)
class Post:
    text: str  # the post without its time/place words
    context: str  # the words put before it: a time, a place, or both
    fits: tuple[tuple[str, ...], ...]  # judged on the English captions (bench_answers._fits)
    says: tuple[str, ...]  # a planted photo's description names one of these (it fits by it)

    @property
    def in_summer(self) -> bool:
        return "夏天" in self.context

    @property
    def at_dali(self) -> bool:
        return "大理" in self.context


POSTS = (
    Post(
        "带狗狗去海边玩",
        "去年夏天，",
        (("dog", "dogs"), ("beach", "ocean", "sea", "shore")),
        ("狗",),
    ),
    Post(
        "学滑板摔了好几跤",
        "去年夏天，",
        (("skateboard", "skateboarder", "skateboarding"),),
        ("滑板",),
    ),
    Post("踢了一下午足球", "去年夏天，", (("soccer", "football"),), ("足球", "踢球")),
    Post(
        "去攀岩，手都磨破了",
        "在大理，",
        (("climbing", "climber", "climbs"), ("rock", "wall")),
        ("攀岩", "攀爬"),
    ),
    Post(
        "滑雪，第一次站上雪板",
        "在大理，",
        (("ski", "skier", "skiing", "snowboarder"),),
        ("滑雪", "雪板"),
    ),
    Post(
        "冲浪，被浪拍了好几次",
        "在大理，",
        (("surfer", "surfing", "surfboard", "surfs"),),
        ("冲浪",),
    ),
    Post(
        "和朋友骑自行车",
        "去年夏天在大理，",
        (("bike", "bicycle", "biker", "cyclist"),),
        ("自行车", "单车"),
    ),
    Post(
        "宝宝在沙滩上玩沙子",
        "去年夏天在大理，",
        (("sand", "beach"), ("child", "boy", "girl")),
        ("沙",),
    ),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--work-dir", type=Path, required=True, help="the library (kept)")
    parser.add_argument("--baseline", type=Path, help="another checkout, measured beside this")
    parser.add_argument("--code", type=Path, default=HERE.parent, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.json:
        sys.path.insert(0, str(args.code))
        print(json.dumps(measure(args.work_dir), ensure_ascii=False))
        return
    if not (args.work_dir / "descriptions.jsonl").is_file():
        build_library(args.work_dir)
    sides = [("this", _side(HERE.parent, args.work_dir))]
    if args.baseline is not None:
        sides.insert(0, ("baseline", _side(args.baseline, args.work_dir)))
    _print(sides)


# --- the library -------------------------------------------------------------------------------
def build_library(work: Path) -> None:
    """Photos with EXIF time and GPS, their descriptions file, and the index."""
    records = [r for r in _records() if len(r.get("captions_zh") or []) == 5]
    planted = _planted(records)
    library, lines = work / "photos", []
    library.mkdir(parents=True, exist_ok=True)
    for record in records:
        name = Path(record["image"]).stem
        for variant in range(len(VARIANTS)):
            rel_path = f"{name}-{VARIANTS[variant]}.jpg"
            about = _about_a_post(record)
            where = planted[rel_path][:2] if rel_path in planted else _when(rel_path, about)
            _write(library / rel_path, EVAL_DIR / record["image"], variant, *where)
            text = description(record, variant)
            lines.append(json.dumps({"image": rel_path, "description": text}))
    (work / "descriptions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    by_post = {post.text: [p for p, v in planted.items() if v[2] == post.text] for post in POSTS}
    (work / "planted.json").write_text(json.dumps(by_post, ensure_ascii=False))
    _index(work)


def _planted(
    records: list[dict[str, Any]],
) -> dict[str, tuple[datetime, tuple[float, float], str]]:
    """rel_path -> (time, place, post) of the planted photos: for each post, a copy of each of
    two photos that fit it (and no other post) whose description names what the post is about."""
    rng, planted = random.Random(11), {}
    for post in POSTS:
        copies = [
            (record, variant)
            for record in records
            if _fits(record, post.fits) and _fitting_posts(record) == 1
            for variant in range(len(VARIANTS))
            if any(word in description(record, variant) for word in post.says)
        ]
        chosen: dict[str, int] = {}
        for record, variant in rng.sample(copies, len(copies)):
            chosen.setdefault(record["image"], variant)
            if len(chosen) == PLANTED_PER_POST:
                break
        taken = datetime(2025, 7, 12, 15) if post.in_summer else _outside_summer(rng)
        position = DALI if post.at_dali else ELSEWHERE[0]
        for image, variant in chosen.items():
            planted[f"{Path(image).stem}-{VARIANTS[variant]}.jpg"] = (taken, position, post.text)
    return planted


def description(record: dict[str, Any], variant: int) -> str:
    """A copy's description: four of the photo's five captions, starting at the variant's."""
    captions = record["captions_zh"]
    return "".join(captions[(variant + i) % 5] for i in range(4))


def _about_a_post(record: dict[str, Any]) -> bool:
    """Whether a photo fits a post, or its captions name what a post is about (a child sledding
    says 滑雪): such a photo stays out of the windows, where only the planted ones are."""
    captions = "".join(record["captions_zh"])
    return _fitting_posts(record) > 0 or any(w in captions for p in POSTS for w in p.says)


def _fitting_posts(record: dict[str, Any]) -> int:
    return sum(_fits(record, post.fits) for post in POSTS)


def _when(rel_path: str, about_a_post: bool) -> tuple[datetime, tuple[float, float]]:
    """Any time over 2023-2026 and a city (大理 one time in five) for a photo about no post,
    so the windows are full of photos; outside every window for one about a post."""
    rng = random.Random(rel_path)  # the same for the same photo, run after run
    if about_a_post:
        return _outside_summer(rng), rng.choice(ELSEWHERE)
    taken = datetime(2023, 1, 1) + timedelta(minutes=rng.randrange(60 * 24 * 1400))
    return taken, DALI if rng.random() < 0.2 else rng.choice(ELSEWHERE)


def _outside_summer(rng: random.Random) -> datetime:
    while True:
        taken = datetime(2023, 1, 1) + timedelta(minutes=rng.randrange(60 * 24 * 1400))
        if not SUMMER[0] <= taken < SUMMER[1] and taken < NOW:
            return taken


def _write(
    path: Path, source: Path, variant: int, taken: datetime, position: tuple[float, float]
) -> None:
    from PIL import Image, ImageOps

    sys.path.insert(0, str(HERE.parent))
    from tests.support.made_photos import photo_exif

    image = Image.open(source).convert("RGB")
    if variant == 1:
        image = ImageOps.mirror(image)
    elif variant == 2:
        width, height = image.size
        box = (width // 10, height // 10, width - width // 10, height - height // 10)
        image = image.crop(box).resize((width, height))
    image.save(path, "JPEG", quality=90, exif=photo_exif(taken, position))


def _index(work: Path) -> None:
    sys.path.insert(0, str(HERE.parent))
    from index.wiring import build_app

    app = build_app(_settings(work), descriptions=work / "descriptions.jsonl")
    try:
        report = app.index()
        print(f"indexed {report.embedded} photos ({report.failed} failed)", file=sys.stderr)
    finally:
        app.close()


def _settings(work: Path) -> Any:
    from config import load_settings

    return load_settings(
        library=work / "photos",
        data_dir=work / "data",
        embedding={"model": str(HERE.parent / "models" / "m3e-small")},
        rerank={"enabled": False},
        visual={"backend": "off"},
    )


# --- the measurement ---------------------------------------------------------------------------
def measure(work: Path) -> dict[str, Any]:
    from index.wiring import build_app

    planted = json.loads((work / "planted.json").read_text())
    records = {Path(r["image"]).stem: r for r in _records()}
    app = build_app(_settings(work), now=lambda: NOW)
    figures: dict[str, Any] = {"photos": app.store.count()}
    try:
        for post in POSTS:
            figures[post.context + post.text] = _post_figures(app, post, planted, records)
    finally:
        app.close()
    return figures


def _post_figures(
    app: Any, post: Post, planted: dict[str, list[str]], records: dict[str, Any]
) -> dict[str, Any]:
    def good(path: str) -> bool:
        return _fits(records[path.rsplit("-", 1)[0]], post.fits)

    plain = _top5(app, post.text)
    context = _top5(app, post.context + post.text)
    fitting = sum(_fits(record, post.fits) for record in records.values())
    return {
        "fitting": fitting * len(VARIANTS),
        "P@5 plain": sum(map(good, plain)) / 5,
        "P@5 with words": sum(map(good, context)) / 5,
        "planted in top 5": sum(p in context for p in planted[post.text]),
    }


def _top5(app: Any, text: str) -> list[str]:
    return [r.path for r in app.recommend(text, 5, rerank=False).results]


def _side(checkout: Path, work: Path) -> dict[str, Any]:
    python = checkout / ".venv" / "bin" / "python"
    command = [str(python), __file__, "--json", "--code", str(checkout), "--work-dir", str(work)]
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    figures["load"] = os.getloadavg()[0]
    return figures


def _print(sides: list[tuple[str, dict[str, Any]]]) -> None:
    for name, figures in sides:
        print(f"== {name} ({figures['photos']} photos, load {figures['load']:.1f})")
        total = {"planted": 0, "plain": 0.0, "words": 0.0}
        for post in POSTS:
            row = figures[post.context + post.text]
            total["planted"] += row["planted in top 5"]
            total["plain"] += row["P@5 plain"]
            total["words"] += row["P@5 with words"]
            print(f"  {post.context + post.text}: {row}")
        count = len(POSTS)
        share = total["planted"] / (PLANTED_PER_POST * count)
        print(
            f"  planted photos in the top 5: {total['planted']}/{PLANTED_PER_POST * count} "
            f"({share:.0%}); P@5 {total['plain'] / count:.3f} plain, "
            f"{total['words'] / count:.3f} with the time/place words"
        )


def _records() -> list[dict[str, Any]]:
    with (EVAL_DIR / "captions.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def _fits(record: dict[str, Any], groups: tuple[tuple[str, ...], ...]) -> bool:
    from bench_answers import _fits as fits

    return fits(record, [list(group) for group in groups])


if __name__ == "__main__":
    main()
