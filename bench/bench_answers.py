"""What a person sees, measured: the order, the 匹配度 and the "nothing fits" rule of the
recommend path, on an index `peitu eval --work-dir DIR` left behind (captions or offline).

In one run, for this checkout and (with `--baseline CHECKOUT`) another one side by side (the
same script run by that checkout's own interpreter on the same index):

- `peitu eval`'s figures on the index: R@1/5/10 of the real queries (the 5th caption of each
  photo, `--protocol rich`; caption 2 with `short`) asked for the closest photos, the share of
  real queries whose plain answer has photos, and the share of `offdomain_dev.txt` and of
  `bench/data/offdomain_holdout.txt` answered "nothing fits";
- the dev posts of `bench/data/dev_posts.jsonl` (dated 朋友圈-style posts written for PeiTu, each
  with the words that make an eval photo fit it, judged on the photo's five English captions:
  a group fits when two captions hold one of its words, the photo when every group fits):
  P@5 of the closest five, the posts whose plain answer has photos, and the share of shown
  photos that fit;
- generic posts ("一个人的旅行，走走停停", "今天好累"): how many get photos, and by what words;
- whether each answer is in the order of the 匹配度 it shows, and whether a plain answer shows
  a photo under 50.

Reads ../shared/eval at run time; prints figures, asserts nothing.

    .venv/bin/python bench/bench_answers.py --work-dir /tmp/eval-rich [--baseline /work/main]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
EVAL_DIR = Path(os.environ.get("PEITU_EVAL_DIR", HERE.parents[1] / "shared" / "eval"))
POSTS = HERE / "data" / "dev_posts.jsonl"
GENERIC = HERE / "data" / "generic_posts.txt"
HOLDOUT = HERE / "data" / "offdomain_holdout.txt"
_WORD = re.compile(r"[a-z]+")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--work-dir", type=Path, required=True, help="a peitu eval --work-dir")
    parser.add_argument("--protocol", choices=("rich", "short"), default="rich")
    parser.add_argument("--baseline", type=Path, help="another checkout, measured beside this")
    parser.add_argument("--code", type=Path, default=HERE.parent, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.json:  # one side of the comparison, run by its own interpreter
        sys.path.insert(0, str(args.code))
        print(json.dumps(measure(args.work_dir, args.protocol), ensure_ascii=False))
        return
    sides = {"this": _side(HERE.parent, args)}
    if args.baseline is not None:
        sides = {"baseline": _side(args.baseline, args), **sides}
    _print(sides)


def _side(checkout: Path, args: argparse.Namespace) -> dict[str, Any]:
    python = checkout / ".venv" / "bin" / "python"
    command = [str(python), __file__, "--json", "--code", str(checkout)]
    command += ["--work-dir", str(args.work_dir), "--protocol", args.protocol]
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    figures["load"] = os.getloadavg()[0]
    return figures


def measure(work: Path, protocol: str) -> dict[str, Any]:
    """Every figure of one checkout (imported from `sys.path`) on the index in `work`."""
    from config import load_settings
    from index.wiring import build_app

    settings = load_settings(
        library=work / "library",
        data_dir=work / "data",
        embedding={"model": str(HERE.parent / "models" / "m3e-small")},
        chroma={"url": "", "collection": "peitu_eval"},
        indexing={"follow_external_links": True},
    )
    app = build_app(settings)
    try:
        ids = app.catalog.files()
        records = [json.loads(line) for line in (EVAL_DIR / "captions.jsonl").open()]
        figures = _real_queries(app, records, ids, protocol)
        figures |= _offdomain(app)
        figures |= _posts(app, records, ids)
    finally:
        app.close()
    return figures


def _answer(app: Any, text: str, closest: bool) -> list[dict[str, Any]]:
    result = app.recommend(text, 10 if closest else 5, rerank=False, closest=closest)
    return [r.__dict__ for r in result.results]


def _real_queries(
    app: Any, records: list[dict[str, Any]], ids: dict[str, str], protocol: str
) -> dict[str, Any]:
    ranks, answered, unordered, under = [], 0, 0, 0
    for record in records:
        captions = record.get("captions_zh") or []
        if len(captions) != 5:
            continue
        text = captions[4] if protocol == "rich" else captions[1]
        found = [r["photo_id"] for r in _answer(app, text, closest=True)]
        target = ids.get(Path(record["image"]).name)
        ranks.append(found.index(target) + 1 if target in found else None)
        plain = _answer(app, text, closest=False)
        answered += bool(plain)
        unordered += not _in_match_order(plain)
        under += any(r["match"] < 50 for r in plain)
    count = len(ranks)
    recall = {f"R@{k}": sum(1 for r in ranks if r and r <= k) / count for k in (1, 5, 10)}
    return recall | {
        "real_with_photos": answered / count,
        "answers_out_of_order": unordered,
        "plain_answers_with_a_photo_under_50": under,
    }


def _in_match_order(results: list[dict[str, Any]]) -> bool:
    shown = [round(r["match"]) for r in results]
    return shown == sorted(shown, reverse=True)


def _offdomain(app: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, path in (("offdomain_dev", EVAL_DIR / "offdomain_dev.txt"), ("holdout", HOLDOUT)):
        texts = _lines(path)
        empty = [t for t in texts if not _answer(app, t, closest=False)]
        out[f"{name}_nothing_fits"] = f"{len(empty)}/{len(texts)}"
    return out


def _posts(app: Any, records: list[dict[str, Any]], ids: dict[str, str]) -> dict[str, Any]:
    posts = [json.loads(line) for line in _lines(POSTS)]
    p5, answered, precision, unordered = [], 0, [], 0
    for post in posts:
        good = {ids[Path(r["image"]).name] for r in records if _fits(r, post["fits"])}
        closest = _answer(app, post["text"], closest=True)[:5]
        p5.append(sum(r["photo_id"] in good for r in closest) / 5)
        plain = _answer(app, post["text"], closest=False)
        unordered += not _in_match_order(plain)
        if plain:
            answered += 1
            precision.append(sum(r["photo_id"] in good for r in plain) / len(plain))
    generic = []
    for text in _lines(GENERIC):
        plain = _answer(app, text, closest=False)
        if plain:
            generic.append(f"{text} → {plain[0]['match']:.0f} {plain[0]['reason'][:24]}")
    return {
        "dev_P@5": sum(p5) / len(p5),
        "dev_answered": f"{answered}/{len(posts)}",
        "dev_shown_precision": sum(precision) / max(1, len(precision)),
        "dev_out_of_order": unordered,
        "generic_with_photos": f"{len(generic)}/{len(_lines(GENERIC))}",
        "generic_answers": generic,
    }


def _fits(record: dict[str, Any], groups: list[list[str]]) -> bool:
    """Every group has a word in two or more of the photo's English captions."""
    if len(record.get("captions_zh") or []) != 5:
        return False
    captions = [set(_WORD.findall(c.lower())) for c in record.get("captions_en") or []]
    return all(sum(any(w in c for w in group) for c in captions) >= 2 for group in groups)


def _lines(path: Path) -> list[str]:
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _print(sides: dict[str, dict[str, Any]]) -> None:
    names = list(sides)
    keys = [k for k in sides[names[-1]] if k not in ("generic_answers",)]
    print("figure".ljust(40) + "".join(n.rjust(14) for n in names))
    for key in keys:
        cells = [_cell(sides[n].get(key)) for n in names]
        print(key.ljust(40) + "".join(c.rjust(14) for c in cells))
    for name in names:
        for line in sides[name].get("generic_answers", []):
            print(f"  [{name}] {line}")


def _cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    main()
