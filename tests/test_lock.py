"""The one-job-at-a-time lock: across processes, and never upset by status probes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from index.errors import IndexBusy
from index.library.lock import IndexLock

REPO = Path(__file__).resolve().parents[1]

PROBE_IN_CHILD = """
import sys, threading
sys.path.insert(0, sys.argv[2])
from index.library.lock import IndexLock
lock = IndexLock(__import__("pathlib").Path(sys.argv[1]))
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
print("probing", flush=True)
while not done.is_set():
    lock.busy()
"""

HOLD_IN_CHILD = """
import sys, time
sys.path.insert(0, sys.argv[2])
from index.library.lock import IndexLock
with IndexLock(__import__("pathlib").Path(sys.argv[1])).hold("child-job"):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_busy_follows_a_holder_in_this_process(tmp_path: Path) -> None:
    lock = IndexLock(tmp_path / "index.library.lock")
    assert not lock.busy()
    with lock.hold("job-1"):
        assert lock.busy() and lock.holder() == "job-1"
        with pytest.raises(IndexBusy) as raised, lock.hold("job-2"):
            pass
        assert raised.value.running_job_id == "job-1"
    assert not lock.busy()


@contextmanager
def child_process(script: str, lock_path: Path, says: str) -> Iterator[None]:
    """Run `script` over the lock in another process until the block ends (its stdin closes)."""
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(lock_path), str(REPO)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == says
        yield
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=30)


def test_a_holder_in_another_process_is_seen_and_refused(tmp_path: Path) -> None:
    path = tmp_path / "index.library.lock"
    with child_process(HOLD_IN_CHILD, path, "held"):
        lock = IndexLock(path)
        assert lock.busy()
        with pytest.raises(IndexBusy) as raised, lock.hold("mine"):
            pass
        assert raised.value.running_job_id == "child-job"
    assert not IndexLock(path).busy()


def test_status_probes_never_make_a_job_fail(tmp_path: Path) -> None:
    """`busy()` is polled by /readyz, /metrics, the page and other processes while jobs start."""
    path = tmp_path / "index.library.lock"
    lock = IndexLock(path)
    failures = 0
    with child_process(PROBE_IN_CHILD, path, "probing"):
        for number in range(2000):
            try:
                with lock.hold(f"job-{number}"):
                    pass
            except IndexBusy:
                failures += 1
    assert failures == 0
