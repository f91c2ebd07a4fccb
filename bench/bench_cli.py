"""Start-up cost of the `peitu` command, side by side with `python -c "import chromadb"`.

Each row is a fresh subprocess (`sys.executable -m cli.main …` from the repo root), timed by
wall clock; the median of --repeat runs is printed beside the baseline and as a multiple of it.
One further run per row under `-X importtime` says whether torch / chromadb /
sentence_transformers got imported at all.

- baseline: `python -c "import chromadb"` (the weight of the vector store alone)
- help: `peitu --help`
- status: `peitu status` (PEITU_LIBRARY set) on a small data folder (12 eval photos, indexed once beforehand)
- bad library: `peitu index --library /no/such/folder` (must fail fast, with one line)
- recommend: a cold `peitu recommend 海边的日落 --no-rerank` (models/m3e-small, HF_HUB_OFFLINE=1)

Timing is noisy on a shared machine; the figures are for reading, nothing is asserted.

    .venv/bin/python bench/bench_cli.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.core_fixtures import build_small_library  # noqa: E402

HEAVY = ("torch", "chromadb", "sentence_transformers")


@dataclass(frozen=True)
class Row:
    name: str
    argv: list[str]
    expect_ok: bool = True


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PEITU_", "DASHSCOPE_"))}
    env.update(
        HF_HUB_OFFLINE="1",
        PEITU_DATA_DIR=str(data_dir),
        PEITU_EMBEDDING__MODEL=str(REPO / "models" / "m3e-small"),
        PEITU_RERANK__ENABLED="false",
    )
    return env


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False
    )


def _timed(row: Row, env: dict[str, str], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        proc = _run(row.argv, env)
        samples.append(time.perf_counter() - start)
        if (proc.returncode == 0) != row.expect_ok:
            raise SystemExit(f"{row.name}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    return samples


def _heavy_imports(row: Row, env: dict[str, str]) -> list[str]:
    """Which of HEAVY the command imported (top-level names from `-X importtime`)."""
    proc = _run([row.argv[0], "-X", "importtime", *row.argv[1:]], env)
    imported = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            imported.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return [name for name in HEAVY if name in imported]


def _prepare(root: Path) -> dict[str, str]:
    library = build_small_library(root, 12)
    env = _env(root / "data")
    env["PEITU_LIBRARY"] = str(library.root)
    proc = _run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "index",
            "--library",
            str(library.root),
            "--descriptions",
            str(library.descriptions),
            "--json",
        ],
        env,
    )
    if proc.returncode != 0:
        raise SystemExit(f"indexing the small library failed:\n{proc.stderr[-2000:]}")
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    peitu = [sys.executable, "-m", "cli.main"]
    with tempfile.TemporaryDirectory(prefix="peitu-bench-cli-") as tmp:
        env = _prepare(Path(tmp))
        rows = [
            Row("baseline: import chromadb", [sys.executable, "-c", "import chromadb"]),
            Row("peitu --help", [*peitu, "--help"]),
            Row("peitu status", [*peitu, "status"]),
            Row(
                "peitu index --library <missing>",
                [*peitu, "index", "--library", str(Path(tmp) / "no-such-folder")],
                expect_ok=False,
            ),
            Row("peitu recommend (cold)", [*peitu, "recommend", "海边的日落", "--no-rerank"]),
        ]
        results = [(row, _timed(row, env, args.repeat), _heavy_imports(row, env)) for row in rows]
    baseline = statistics.median(results[0][1])
    print(f"median of {args.repeat} runs, wall clock, {sys.executable}")
    print(f"{'command':<34} {'median s':>9} {'min s':>7} {'× base':>7}  heavy imports")
    for row, samples, heavy in results:
        median = statistics.median(samples)
        print(
            f"{row.name:<34} {median:>9.2f} {min(samples):>7.2f} {median / baseline:>7.2f}  "
            f"{', '.join(heavy) or '-'}"
        )


if __name__ == "__main__":
    main()
