"""Start-up cost of the `peitu` command, before/after side by side, beside `import chromadb`.

Each row is a fresh subprocess (`sys.executable -m cli.main …`), timed by its CPU seconds
(user + system, of the process and any it started: what it costs the machine, which a busy
neighbour does not inflate as it does the wall clock) and by wall clock; the median of --repeat
runs is printed for this checkout ("after") and for a git ref ("before", `--before main`:
exported with `git archive` into a temporary folder, run by the same Python and models), each as
a multiple of the baseline's CPU. Every row runs its own baseline: the runs of the baseline,
before and after alternate, so a change in the machine's load falls on all alike. One further run per row and checkout under
`-X importtime` (first, so it also warms the file cache) says whether torch / chromadb /
sentence_transformers got imported at all. Each checkout indexes its own small data folder
first (12 eval photos).

- baseline: `python -c "import chromadb"` (the weight of the vector store alone)
- help: `peitu --help`
- status: `peitu status` (PEITU_LIBRARY set) on the small data folder
- bad library: `peitu index --library /no/such/folder` (must fail fast, with one line)
- recommend (cold): `peitu recommend 海边的日落 --no-rerank` (models/m3e-small, HF_HUB_OFFLINE=1)
- recommend (cold, rerank on, no key): `peitu recommend 海边的日落` with the rerank model left at
  DashScope without an API key (a first run's settings)
- recommend (server): the same with PEITU_SERVER__URL naming a `peitu serve` of this checkout,
  started once and ready beforehand (a checkout without that setting searches on its own)
- cheap mistakes, each beside `peitu status` on the same data folder (the ÷status column): a
  blank text, no library set, a missing image file for `peitu similar`, and `peitu recommend`
  on an empty data folder (its own status row). Their exit codes are not checked: the before
  tree may answer an empty index with exit 0.

Timing is noisy on a shared machine; the figures are for reading, nothing is asserted. The load
average is printed before and after.

    .venv/bin/python bench/bench_cli.py [--repeat 3] [--before main | --before ""]
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.core_fixtures import SmallLibrary, build_small_library  # noqa: E402

HEAVY = ("torch", "chromadb", "sentence_transformers")
TOKEN = "bench-cli-admin-token-0123456789abcdef"
TEXT = "海边的日落"


@dataclass(frozen=True)
class Row:
    name: str
    args: list[str]  # after `python -m cli.main`; empty: the baseline
    expect_ok: bool | None = True  # None: either
    via_server: bool = False
    empty: bool = False  # on an empty data folder
    no_library: bool = False  # without PEITU_LIBRARY
    status_row: str = ""  # the status row of the same data folder, for ÷status
    env: tuple[tuple[str, str], ...] = ()  # set for this row only


@dataclass(frozen=True)
class Figures:
    cpu: list[float]  # user + system seconds of each run
    wall: list[float]
    heavy: list[str]

    @property
    def median(self) -> float:
        return statistics.median(self.cpu)

    @property
    def median_wall(self) -> float:
        return statistics.median(self.wall)


def _rows(missing: Path) -> list[Row]:
    return [
        Row("peitu --help", ["--help"]),
        Row(_STATUS, ["status"]),
        Row("peitu index --library <missing>", ["index", "--library", str(missing)], False),
        Row("peitu recommend (cold)", ["recommend", TEXT, "--no-rerank"]),
        Row(
            "peitu recommend (cold, rerank, no key)",
            ["recommend", TEXT],
            env=(("PEITU_RERANK__ENABLED", "true"),),
        ),
        Row("peitu recommend (server)", ["recommend", TEXT, "--no-rerank"], via_server=True),
        Row("peitu recommend <blank text>", ["recommend", "   "], False, status_row=_STATUS),
        Row("peitu index <no library>", ["index"], False, no_library=True, status_row=_STATUS),
        Row(
            "peitu similar <missing file>",
            ["similar", str(missing / "p.jpg")],
            False,
            status_row=_STATUS,
        ),
        Row(_EMPTY_STATUS, ["status"], empty=True),
        Row(
            "peitu recommend (empty index)",
            ["recommend", TEXT, "--no-rerank"],
            None,
            empty=True,
            status_row=_EMPTY_STATUS,
        ),
    ]


_STATUS = "peitu status"
_EMPTY_STATUS = "peitu status (empty data folder)"


def _env(data_dir: Path, library: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PEITU_", "DASHSCOPE_"))}
    env.update(
        HF_HUB_OFFLINE="1",
        PEITU_DATA_DIR=str(data_dir),
        PEITU_LIBRARY=str(library),
        PEITU_EMBEDDING__MODEL=str(REPO / "models" / "m3e-small"),
        PEITU_RERANK__ENABLED="false",
        PEITU_ADMIN_TOKEN=TOKEN,
    )
    return env


def _argv(row: Row) -> list[str]:
    if not row.args:
        return [sys.executable, "-c", "import chromadb"]
    return [sys.executable, "-m", "cli.main", *row.args]


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )


@dataclass(frozen=True)
class Checkout:
    """Where a row runs: a checkout and the environment of its own indexed data folder."""

    path: Path
    env: dict[str, str]
    server_env: dict[str, str]
    empty_env: dict[str, str]

    def env_of(self, row: Row) -> dict[str, str]:
        if row.via_server:
            return {**self.server_env, **dict(row.env)}
        env = self.empty_env if row.empty else self.env
        if row.no_library:
            env = {k: v for k, v in env.items() if k != "PEITU_LIBRARY"}
        return {**env, **dict(row.env)}


def _measure(row: Row, checkouts: list[Checkout], repeat: int) -> list[Figures]:
    """The row in every checkout, beside the baseline, their runs interleaved (baseline,
    before, after, baseline, ...) so that a change in the machine's load falls on all alike.
    The baseline's figures come first."""
    argv = _argv(row)
    where = [(REPO, checkouts[0].env, _argv(BASELINE))]
    where += [(c.path, c.env_of(row), argv) for c in checkouts]
    heavy = [
        _heavy_imports(_run([args[0], "-X", "importtime", *args[1:]], cwd, env).stderr)
        for cwd, env, args in where
    ]
    cpu: list[list[float]] = [[] for _ in where]
    wall: list[list[float]] = [[] for _ in where]
    for _ in range(repeat):
        for i, (cwd, env, args) in enumerate(where):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            proc = _run(args, cwd, env)
            wall[i].append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[i].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
            expected = row.expect_ok if args is argv else True
            if expected is not None and (proc.returncode == 0) != expected:
                raise SystemExit(
                    f"{row.name} in {cwd}: exit {proc.returncode}\n{proc.stderr[-2000:]}"
                )
    return [Figures(c, w, h) for c, w, h in zip(cpu, wall, heavy, strict=True)]


BASELINE = Row("baseline: import chromadb", [])


def _heavy_imports(stderr: str) -> list[str]:
    """Which of HEAVY the command imported (top-level names from `-X importtime`)."""
    imported = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            imported.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return [name for name in HEAVY if name in imported]


def _index(checkout: Path, library: SmallLibrary, env: dict[str, str]) -> None:
    argv = [sys.executable, "-m", "cli.main", "index", "--descriptions", str(library.descriptions)]
    proc = _run(argv, checkout, env)
    if proc.returncode != 0:
        raise SystemExit(f"indexing the small library in {checkout} failed:\n{proc.stderr[-2000:]}")


def _export(ref: str, target: Path) -> Path:
    """The tree of `ref` in `target` (no .git, no models: the same Python and models serve)."""
    tree = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", ref], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(tree)) as archive:
        archive.extractall(target, filter="data")
    return target


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextmanager
def _server(env: dict[str, str]) -> Iterator[str]:
    """`peitu serve` of this checkout on a free loopback port, ready (model loaded)."""
    port = _free_port()
    argv = [sys.executable, "-m", "cli.main", "serve", "--port", str(port)]
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while not _ready(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"peitu serve did not get ready (exit {proc.poll()})")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=5, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def _prepare(checkout: Path, root: Path, server_url: str) -> Checkout:
    """`checkout` with a data folder indexed by that checkout's own code."""
    library = build_small_library(root, 12)
    env = _env(root / "data", library.root)
    _index(checkout, library, env)
    empty = {**env, "PEITU_DATA_DIR": str(root / "empty-data")}
    return Checkout(checkout, env, {**env, "PEITU_SERVER__URL": server_url}, empty)


@contextmanager
def _indexed_server(root: Path) -> Iterator[str]:
    """A ready `peitu serve` of this checkout over its own small data folder."""
    library = build_small_library(root, 12)
    env = _env(root / "data", library.root)
    _index(REPO, library, env)
    with _server(env) as url:
        yield url


def _print(rows: list[Row], figures: list[list[Figures]], ref: str) -> None:
    """One line per row: before and after medians (CPU seconds, wall seconds), each beside the
    baseline measured in the same interleaved runs."""
    print(f"median of the timed runs, seconds (CPU = user + system; wall); {sys.executable}")
    print(f"before: {ref or '-'}; after: this checkout ({REPO}); ×: CPU median / the baseline's")
    head = f"{'command':<40} {'base':>5} {'before':>13} {'×':>5} {'after':>13} {'×':>5}"
    print(f"{head}  heavy imports")
    for row, found in zip(rows, figures, strict=True):
        base, checkouts = found[0], found[1:]
        cells = [
            f"{f.median:>5.2f} ({f.median_wall:>5.2f}) {f.median / base.median:>5.2f}"
            for f in checkouts
        ]
        if len(cells) == 1:
            cells.insert(0, f"{'-':>13} {'-':>5}")
        imports = " → ".join(", ".join(f.heavy) or "-" for f in checkouts)
        print(f"{row.name:<40} {base.median:>5.2f} {cells[0]} {cells[1]}  {imports}")
    names = [row.name for row in rows]
    print("÷status: wall median / that of `peitu status` on the same data folder (before → after)")
    for row, found in zip(rows, figures, strict=True):
        if row.status_row:
            status = figures[names.index(row.status_row)][1:]
            ratios = " → ".join(
                f"{f.median_wall / status[i].median_wall:.2f}" for i, f in enumerate(found[1:])
            )
            print(f"  {row.name:<32} {ratios}")


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text(encoding="utf-8").split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--before", default="main", help='git ref to compare with ("": none)')
    args = parser.parse_args()
    print(f"bench_cli: {os.cpu_count()} CPUs, load {_load()}")
    with tempfile.TemporaryDirectory(prefix="peitu-bench-cli-") as tmp:
        root = Path(tmp)
        rows = _rows(root / "no-such-folder")
        with _indexed_server(root / "server") as url:
            checkouts = [_prepare(REPO, root / "after", url)]
            if args.before:
                before = _export(args.before, root / "before-checkout")
                checkouts.insert(0, _prepare(before, root / "before", url))
            figures = [_measure(row, checkouts, args.repeat) for row in rows]
    _print(rows, figures, args.before)
    print(f"load at the end {_load()}")


if __name__ == "__main__":
    main()
