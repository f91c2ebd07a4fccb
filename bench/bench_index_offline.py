"""A fully offline `peitu index` (the offline describer: tags, detector, faces, OCR; no vision
model) as a user runs it: one fresh process a run, measured for CPU seconds (user + system),
wall seconds and peak RSS (the kernel's high-water mark for that process, from `wait4`).

Side by side in one run, alternated run by run so a change in the machine's load falls on all
alike: this tree with the visual phase on (the default) and off (`PEITU_VISUAL__BACKEND=off`),
and a git ref (`--before`, default main: exported with `git archive`, run by the same Python and
models) the same two ways. Each run indexes a fresh data folder over the same library: the first
N ../shared/eval photos (`--photos 300,2000`), or with `--phone-size` the same photos enlarged
to 4032 x 3024 JPEGs (what a phone takes; decoding and memory then weigh as they do for a user).

Prints, per library size and set-up, the medians over --repeat runs, the ratio of CPU with the
visual phase to CPU without it, and the load average beside each figure. Asserts nothing.

    .venv/bin/python bench/bench_index_offline.py [--photos 300,2000] [--repeat 1]
        [--before main | --before ""] [--phone-size] [--work DIR]
        [--setups before-on,before-off,this-on,this-off]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EVAL_DIR = Path(os.environ.get("PEITU_EVAL_DIR", REPO.parent / "shared" / "eval"))
MODEL = REPO / "models" / "m3e-small"
PHONE = (4032, 3024)


@dataclass(frozen=True)
class Setup:
    label: str
    tree: Path
    visual: bool


@dataclass
class Runs:
    cpu: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    loads: list[str] = field(default_factory=list)
    photos: list[int] = field(default_factory=list)


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text(encoding="utf-8").split()[:3])


def _library(count: int, phone_size: bool, work: Path) -> Path:
    """The first `count` eval photos (links to them, or enlarged copies with `phone_size`)."""
    library = work / f"library-{count}{'-phone' if phone_size else ''}"
    if library.is_dir():
        return library
    names = sorted(p.name for p in (EVAL_DIR / "images").glob("*.jpg"))[:count]
    partial = library.with_name(library.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name in names:
        source = EVAL_DIR / "images" / name
        if phone_size:
            from PIL import Image

            with Image.open(source) as image:
                big = image.convert("RGB").resize(PHONE, Image.Resampling.BICUBIC)
                big.save(partial / name, quality=90)
        else:
            shutil.copyfile(source, partial / name)
    partial.rename(library)
    return library


def _env(data_dir: Path, library: Path, visual: bool, exports: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PEITU_", "DASHSCOPE_"))}
    env.update(
        HF_HUB_OFFLINE="1",
        PEITU_DATA_DIR=str(data_dir),
        PEITU_LIBRARY=str(library),
        PEITU_EMBEDDING__MODEL=str(MODEL),
        PEITU_EMBEDDING__EXPORT_DIR=str(exports),
        PEITU_RERANK__ENABLED="false",
        PEITU_VISUAL__BACKEND="bundled" if visual else "off",
    )
    return env


def _run(setup: Setup, library: Path, work: Path, exports: Path) -> tuple[float, float, float, int]:
    """(CPU s, wall s, peak RSS MB, photos indexed) of one `peitu index --describer offline`."""
    data_dir = Path(tempfile.mkdtemp(prefix="data-", dir=work))
    argv = [sys.executable, "-m", "cli.main", "index", "--describer", "offline", "--json"]
    env = _env(data_dir, library, setup.visual, exports)
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, cwd=setup.tree, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    shutil.rmtree(data_dir, ignore_errors=True)
    if proc.returncode not in (0, 3):  # 3: some photos failed, reported in the summary
        raise SystemExit(f"{setup.label}: exit {proc.returncode}\n{stderr[-3000:]}")
    report = json.loads(stdout.strip().splitlines()[-1])
    cpu = usage.ru_utime + usage.ru_stime
    return cpu, wall, usage.ru_maxrss / 1024, int(report["embedded"])


def _export(ref: str, target: Path) -> Path:
    """The tree of `ref` (`bench_cli`'s export), with this checkout's models linked in."""
    from bench_cli import _export as export_tree

    export_tree(ref, target)
    (target / "models").symlink_to(REPO / "models")
    return target


def _prepare_export(tree: Path, exports: Path) -> None:
    """The embedding model's onnxruntime export, made once before the timed runs (as a user's
    first start makes it): every run of every tree shares it."""
    script = (
        "import sys; from pathlib import Path; sys.path.insert(0, '.');"
        "from index.search.embed import SentenceTransformerEmbedder;"
        f"SentenceTransformerEmbedder({str(MODEL)!r}, runtime='auto', "
        f"export_cache=Path({str(exports)!r})).load()"
    )
    subprocess.run([sys.executable, "-c", script], cwd=tree, check=True, capture_output=True)


def _print(count: int, setups: list[Setup], runs: dict[str, Runs]) -> None:
    print(f"\n{count} photos (medians; load = 1/5/15-min load average when each run ended)")
    for setup in setups:
        r = runs[setup.label]
        print(
            f"  {setup.label:<34} CPU {statistics.median(r.cpu):7.1f} s  wall "
            f"{statistics.median(r.wall):7.1f} s  peak RSS {statistics.median(r.rss_mb):6.0f} MB  "
            f"({r.photos[-1]} photos; load {' | '.join(r.loads)})"
        )
    for tree in dict.fromkeys(s.label.rsplit(",", 1)[0] for s in setups):
        if f"{tree}, visual on" not in runs or f"{tree}, visual off" not in runs:
            continue
        on, off = runs[f"{tree}, visual on"], runs[f"{tree}, visual off"]
        ratio = statistics.median(on.cpu) / statistics.median(off.cpu)
        print(f"  {tree}: CPU with the visual phase / without = {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", default="300,2000")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--before", default="main", help='git ref to compare with ("": none)')
    parser.add_argument("--phone-size", action="store_true")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument(
        "--setups",
        default="before-on,before-off,this-on,this-off",
        help="which runs: the git ref's and this tree's, with the visual phase on and off",
    )
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="peitu-bench-index-"))
    work.mkdir(parents=True, exist_ok=True)
    exports = work / "encoders"
    print(f"bench_index_offline: {os.cpu_count()} CPUs, load {_load()}, work {work}", flush=True)
    trees = [("this tree", REPO)]
    if args.before:
        before = work / f"tree-{args.before.replace('/', '_')}"
        if not before.is_dir():
            _export(args.before, before)
        trees.insert(0, (args.before, before))
    _prepare_export(REPO, exports)
    wanted = set(args.setups.split(","))
    setups = [
        Setup(f"{name}, visual {v}", tree, v == "on")
        for name, tree in trees
        for v in ("on", "off")
        if f"{'this' if tree == REPO else 'before'}-{v}" in wanted
    ]
    for count in (int(c) for c in args.photos.split(",")):
        library = _library(count, args.phone_size, work)
        runs = {s.label: Runs() for s in setups}
        for _ in range(args.repeat):
            for setup in setups:
                cpu, wall, rss, photos = _run(setup, library, work, exports)
                found = runs[setup.label]
                found.cpu.append(cpu)
                found.wall.append(wall)
                found.rss_mb.append(rss)
                found.photos.append(photos)
                found.loads.append(_load())
                print(
                    f"  {count} photos, {setup.label}: CPU {cpu:.1f} s, wall {wall:.1f} s, "
                    f"peak RSS {rss:.0f} MB (load {_load()})",
                    flush=True,
                )
        _print(count, setups, runs)
    print(f"\nload at the end {_load()}")


if __name__ == "__main__":
    main()
