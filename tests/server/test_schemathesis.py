"""schemathesis over the server's OpenAPI schema (all checks), a short run: 0 server errors,
0 schema mismatches. The full run (300 examples per operation) is `scripts/schemathesis.sh`."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_schemathesis_finds_no_server_error_and_no_mismatch() -> None:
    run = subprocess.run(
        ["bash", str(REPO / "scripts" / "schemathesis.sh"), "15"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert " passed" in run.stdout
