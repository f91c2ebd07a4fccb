"""How indexing keeps the encoder busy: batches that grow while descriptions come fast, and a
torch thread count chosen by measuring (one thread, or one per core)."""

from __future__ import annotations

import numpy as np
import pytest

from index.indexing.indexer import _EMBED_BATCH, _LIVE_BATCH, _LiveBatches
from index.search.embed import BIG_ENCODE, SentenceTransformerEmbedder, ThreadChoice


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _batch_sizes(batches: _LiveBatches, clock: Clock, arrivals: int, gap_s: float) -> list[int]:
    """The sizes embedded when `arrivals` descriptions come `gap_s` apart (an embed is instant)."""
    sizes, waiting = [], 0
    for _ in range(arrivals):
        clock.now += gap_s
        waiting += 1
        if batches.due(waiting):
            sizes.append(waiting)
            batches.embedded()
            waiting = 0
    return sizes


def test_a_descriptions_file_is_embedded_in_batches_growing_to_the_full_size() -> None:
    clock = Clock()
    sizes = _batch_sizes(_LiveBatches(clock), clock, 1000, gap_s=0.0001)
    assert sizes[:5] == [16, 32, 64, 128, 256]
    assert set(sizes[5:]) == {_EMBED_BATCH}


def test_a_slow_describer_gets_its_photos_searchable_every_live_batch() -> None:
    clock = Clock()
    sizes = _batch_sizes(_LiveBatches(clock), clock, 100, gap_s=0.5)  # a vision model
    assert sizes == [_LIVE_BATCH] * 6


def test_a_describer_that_slows_down_falls_back_to_the_live_batch() -> None:
    clock = Clock()
    batches = _LiveBatches(clock)
    assert _batch_sizes(batches, clock, 48, gap_s=0.0001) == [16, 32]
    assert _batch_sizes(batches, clock, 32, gap_s=1.0) == [16, 16]


def _rates(choice: ThreadChoice, seconds: dict[int, float], calls: int) -> list[int]:
    picked = []
    for _ in range(calls):
        threads = choice.pick()
        picked.append(threads)
        choice.record(threads, 100, seconds[threads])
    return picked


def test_the_faster_thread_count_is_used_and_the_other_tried_again() -> None:
    choice = ThreadChoice(cores=2)
    busy_neighbour = {1: 1.0, 2: 3.0}  # two threads wait on each other: 3x slower
    picked = _rates(choice, busy_neighbour, 14)
    assert picked[:2] == [1, 2]  # each measured once
    assert picked.count(2) == 3 and picked[5] == 2 and picked[11] == 2  # tried again, not kept
    idle = {1: 1.0, 2: 0.55}  # the neighbour stopped: two threads are faster now
    later = _rates(choice, idle, 12)
    assert 2 in later[:4]  # tried again within _RETRY_EVERY calls, found faster ...
    assert later[4:].count(2) >= 7  # ... and kept, one thread still tried now and then


def test_one_core_has_nothing_to_choose() -> None:
    assert set(_rates(ThreadChoice(cores=1), {1: 1.0}, 10)) == {1}


@pytest.mark.parametrize("count", [BIG_ENCODE * 2])
def test_auto_threads_encode_as_one_thread_does(m3e_path: object, count: int) -> None:
    texts = [f"第{i}张照片：一只狗在草地上奔跑，蓝天白云" for i in range(count)]
    auto = SentenceTransformerEmbedder(str(m3e_path), threads="auto")
    fixed = SentenceTransformerEmbedder(str(m3e_path), threads=1)
    first, second = auto.embed(texts), auto.embed(texts)  # one thread, then one per core
    np.testing.assert_allclose(first, fixed.embed(texts), atol=1e-5)
    np.testing.assert_allclose(second, first, atol=1e-5)
    import torch

    assert torch.get_num_threads() == 1  # a query after a big encode: one thread again
