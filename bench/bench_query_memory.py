"""Peak memory of one image query, for a normal photo and for small files of large pictures.

A query image is what anyone allowed to ask may send (`peitu similar FILE`, `POST
/api/search/similar`, the bot's /相似): its decode must cost about what a normal photo costs,
whatever its pixels. For each code tree given (this checkout, and e.g. /work/main as "before"),
interleaved in one run, on a small library indexed by that tree (made photos, sidecar
descriptions, the visual index filled):

- CLI: `python -m cli.main similar FILE --json` in a fresh process; its peak RSS (ru_maxrss
  from wait4) and the same for a normal photo, the baseline.
- HTTP: one `peitu serve` per tree; before each request its peak RSS is reset
  (/proc/PID/clear_refs, Linux) and read back after it (VmHWM), so each figure is that
  request's peak; the normal photo is sent first and again last.

Images (made once): a 4000x3000 JPEG (the baseline), the red team's 10,900x10,900 grey PNG
(118.8 Mpx, ~115 KB), a 10,900x10,900 JPEG, and an 8000x6000 colour PNG (48 Mpx, decoded whole).
Prints figures; asserts nothing. Needs Linux and a process it may reset (run as its owner).

    .venv/bin/python bench/bench_query_memory.py [--tree /work/main] [--tree .]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from PIL import Image, ImageDraw, ImageFilter

REPO = Path(__file__).resolve().parents[1]
M3E_SMALL = REPO / "models" / "m3e-small"
TOKEN = "bench-admin-token-0123456789abcdef"
SIDE = 10_900  # 118.8 Mpx: just under the library's 120 Mpx limit
LIBRARY_PHOTOS = 12


@dataclass(frozen=True)
class Query:
    name: str
    path: Path


def smooth_picture(size: tuple[int, int], seed: int) -> Image.Image:
    """A photo-like picture: coloured blobs, blurred (compresses like a photo, not like noise)."""
    rng = random.Random(seed)
    small = Image.new("RGB", (size[0] // 40, size[1] // 40), (120, 140, 160))
    draw = ImageDraw.Draw(small)
    for _ in range(40):
        x, y = rng.randrange(small.width), rng.randrange(small.height)
        r = rng.randrange(5, max(6, small.width // 4))
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    return small.filter(ImageFilter.GaussianBlur(3)).resize(size, Image.Resampling.BILINEAR)


def make_queries(folder: Path) -> list[Query]:
    folder.mkdir(parents=True)
    queries = [
        Query("normal 4000x3000 JPEG", folder / "normal.jpg"),
        Query("grey PNG 10900x10900 (118.8 Mpx)", folder / "grey.png"),
        Query("JPEG 10900x10900 (118.8 Mpx)", folder / "huge.jpg"),
        Query("colour PNG 8000x6000 (48 Mpx)", folder / "colour.png"),
    ]
    smooth_picture((4000, 3000), 1).save(queries[0].path, quality=92)
    Image.new("L", (SIDE, SIDE), 128).save(queries[1].path, optimize=True)
    smooth_picture((SIDE, SIDE), 2).save(queries[2].path, quality=85)
    smooth_picture((8000, 6000), 3).save(queries[3].path, compress_level=1)
    return queries


def make_library(root: Path) -> tuple[Path, Path]:
    library = root / "photos"
    library.mkdir(parents=True)
    lines = []
    for i in range(LIBRARY_PHOTOS):
        name = f"p{i:02d}.jpg"
        smooth_picture((800, 600), 100 + i).save(library / name, quality=90)
        lines.append(json.dumps({"image": name, "description": f"一张彩色的照片，编号{i}"}))
    sidecar = root / "descriptions.jsonl"
    sidecar.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return library, sidecar


def tree_env(data: Path, library: Path, port: int = 0) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PEITU_", "DASHSCOPE_"))}
    env.update(
        HF_HUB_OFFLINE="1",
        PEITU_LIBRARY=str(library),
        PEITU_DATA_DIR=str(data),
        PEITU_EMBEDDING__MODEL=str(M3E_SMALL),
        PEITU_RERANK__ENABLED="false",
        PEITU_ADMIN_TOKEN=TOKEN,
        PEITU_LOG_LEVEL="WARNING",
        PEITU_EMBEDDING__EXPORT_DIR=str(data.parent / "encoders"),
    )
    if port:
        env["PEITU_SERVER__PORT"] = str(port)
    return env


def python_of(tree: Path) -> str:
    own = tree / ".venv" / "bin" / "python"
    return str(own) if own.is_file() else sys.executable


def run_cli(tree: Path, env: dict[str, str], *args: str) -> tuple[int, str, float]:
    """(exit code, stdout, peak RSS in MB) of `python -m cli.main ARGS` run from `tree`."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        child = subprocess.Popen(
            [python_of(tree), "-m", "cli.main", *args], cwd=tree, env=env, stdout=out, stderr=err
        )
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        text = out.read().decode("utf-8", "replace")
        if child.returncode:
            text += err.read().decode("utf-8", "replace")[-400:]
    return child.returncode, text, usage.ru_maxrss / 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serving(tree: Path, env: dict[str, str], log: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as log_file:
        server = subprocess.Popen(
            [python_of(tree), "-m", "cli.main", "serve"],
            cwd=tree,
            env={**env, "PEITU_SERVER__PORT": str(port)},
            stdout=log_file,
            stderr=log_file,
        )
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                if server.poll() is not None:
                    raise SystemExit(f"peitu serve in {tree} exited; see {log}")
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.3)
            yield url, server.pid
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)


def peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise SystemExit("no VmHWM in /proc: this benchmark needs Linux")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise SystemExit("no VmRSS in /proc: this benchmark needs Linux")


def http_query(url: str, pid: int, query: Query) -> tuple[int, float, float]:
    """(status, RSS before, peak RSS during) of one POST /api/search/similar."""
    before = rss_mb(pid)
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak starts again from now
    with query.path.open("rb") as image:
        response = httpx.post(
            f"{url}/api/search/similar",
            files={"file": (query.path.name, image, "application/octet-stream")},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=600,
        )
    return response.status_code, before, peak_mb(pid)


def outcome(code: int, text: str) -> str:
    if code == 0 and '"results"' in text:
        return f"found {text.count('photo_id')}"
    return f"refused ({text.strip().splitlines()[-1][:60] if text.strip() else code})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tree", type=Path, action="append", help="a PeiTu checkout (repeat)")
    args = parser.parse_args()
    trees = [tree.resolve() for tree in (args.tree or [REPO])]
    work = Path(tempfile.mkdtemp(prefix="peitu-bench-query-memory-"))
    print(f"load average {os.getloadavg()}; work folder {work}")
    queries = make_queries(work / "queries")
    for query in queries:
        print(f"  {query.name}: {query.path.stat().st_size / 1024:,.0f} KB")
    library, sidecar = make_library(work / "library")
    envs = {}
    for number, tree in enumerate(trees):
        envs[tree] = tree_env(work / f"data-{number}", library)
        code, text, _ = run_cli(tree, envs[tree], "index", "--descriptions", str(sidecar))
        print(f"indexed with {tree}: exit {code} {text.strip().splitlines()[:1]}")
    print("\nCLI: peitu similar FILE (peak RSS of the whole process)")
    for query in queries:  # interleaved: each image under every tree in turn
        for tree in trees:
            code, text, peak = run_cli(tree, envs[tree], "similar", str(query.path), "--json")
            print(f"  {tree!s:<28} {query.name:<34} {peak:8.0f} MB   {outcome(code, text)}")
    print("\nHTTP: POST /api/search/similar (peak RSS of the server during the request)")
    with servers_of(trees, envs, work) as servers:
        for query in [*queries, queries[0]]:
            for tree in trees:
                url, pid = servers[tree]
                status, before, peak = http_query(url, pid, query)
                print(
                    f"  {tree!s:<28} {query.name:<34} {peak:8.0f} MB"
                    f" (+{peak - before:5.0f} MB over {before:.0f})   HTTP {status}"
                )
    print(f"\nload average {os.getloadavg()}")


@contextmanager
def servers_of(
    trees: list[Path], envs: dict[Path, dict[str, str]], work: Path
) -> Iterator[dict[Path, tuple[str, int]]]:
    """One `peitu serve` per tree, all up at once (so the requests interleave)."""
    if not trees:
        yield {}
        return
    tree, rest = trees[0], trees[1:]
    with (
        serving(tree, envs[tree], work / f"serve-{len(rest)}.log") as first,
        servers_of(rest, envs, work) as others,
    ):
        yield {tree: first, **others}


if __name__ == "__main__":
    main()
