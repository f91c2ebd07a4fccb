"""`peitu index` checks its paths before any model is looked for or loaded.

The embedding model named here does not exist and the hub is offline: had the command reached
the model, it would fail on the model. Seeing the path's own line proves the order.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _peitu(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PEITU_", "DASHSCOPE_"))}
    env.update(
        HF_HUB_OFFLINE="1",
        PEITU_DATA_DIR=str(tmp_path / "data"),
        PEITU_EMBEDDING__MODEL=str(tmp_path / "no-such-model"),
    )
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_wrong_library_is_named_before_the_model_is_looked_for(tmp_path: Path) -> None:
    proc = _peitu(tmp_path, "index", "--library", str(tmp_path / "missing"))
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"peitu: photo library not found or not a folder: {(tmp_path / 'missing').resolve()}"
    ]


def test_a_missing_descriptions_file_is_named_before_the_model(tmp_path: Path) -> None:
    library = tmp_path / "photos"
    library.mkdir()
    missing = tmp_path / "captions.jsonl"
    proc = _peitu(tmp_path, "index", "--library", str(library), "--descriptions", str(missing))
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"peitu: descriptions file not found: {missing}"]


def test_recommend_arguments_are_checked_before_the_model(tmp_path: Path) -> None:
    missing = tmp_path / "texts.txt"
    cases = {
        ("recommend",): "peitu: give the text to find photos for, or --batch FILE",
        ("recommend", ""): "peitu: give the text to find photos for, or --batch FILE",
        ("recommend", "海边", "--top-k", "0"): "peitu: --top-k must be at least 1",
        ("recommend", "--batch", str(missing)): f"peitu: batch file not found: {missing}",
    }
    for args, line in cases.items():
        proc = _peitu(tmp_path, *args)
        assert proc.returncode == 1
        assert proc.stderr.strip().splitlines() == [line], args
