"""schemathesis over the server's OpenAPI schema (all checks), a short run: 0 server errors,
0 schema mismatches. The full run (300 examples per operation) is `scripts/schemathesis.sh`.

Its stateful phase deletes the files it uploads (`delete_file=true`): given a library, the
script works on a temporary copy and leaves the library as it was."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.support.temp_library import MARKER, check, make_copy

REPO = Path(__file__).resolve().parents[2]


def _contents(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_schemathesis_finds_no_server_error_and_no_mismatch_and_leaves_the_library(
    tmp_path: Path,
) -> None:
    library = tmp_path / "real-library"
    library.mkdir()
    for n, rgb in enumerate([(10, 60, 200), (200, 200, 40), (90, 20, 120)]):
        Image.new("RGB", (300, 200), rgb).save(library / f"我的照片{n}.jpg", quality=90)
    before = _contents(library)
    run = subprocess.run(
        ["bash", str(REPO / "scripts" / "schemathesis.sh"), "15", str(library)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert " passed" in run.stdout
    assert _contents(library) == before  # the script's server saw only its copy


def test_the_script_refuses_any_library_but_its_temporary_copy(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    real = tmp_path / "photos"
    real.mkdir()
    copy = make_copy(work)
    assert (copy / MARKER).is_file() and len(list(copy.glob("*.jpg"))) == 4
    assert check(work, copy, work / "data") is None
    assert "refusing the library" in str(check(work, real, work / "data"))
    assert "refusing the library" in str(check(work, None, work / "data"))
    (work / "unmarked").mkdir()
    assert "not the script's temporary copy" in str(check(work, work / "unmarked", work / "d"))
    assert "refusing the data folder" in str(check(work, copy, tmp_path / "data"))


@pytest.mark.parametrize("variable", ["PEITU_LIBRARY", "PEITU_DATA_DIR"])
def test_the_guard_reads_what_the_server_would_read(tmp_path: Path, variable: str) -> None:
    """`check WORK` resolves the settings as `peitu serve` does, environment and all."""
    work = tmp_path / "work"
    work.mkdir()
    copy = make_copy(work)
    env = {"PEITU_LIBRARY": str(copy), "PEITU_DATA_DIR": str(work / "data")}
    env[variable] = str(tmp_path / "elsewhere")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.support.temp_library",
            "check",
            str(work),
        ],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2 and "refusing" in done.stderr, done.stderr
