"""How long reading the reranker's answer takes for answers full of `{` (issue 11).

Baseline (the quadratic `extract_json_object` before issue 11, on the red-team machine):
25k braces 0.5 s, 100k 7.7 s, 200k 28 s. Run: `.venv/bin/python -m bench.bench_json_answer`.
"""

from __future__ import annotations

import time

from index.errors import RerankFailed
from index.ranking.rerank import extract_json_object

BASELINE_S = {25_000: 0.5, 100_000: 7.7, 200_000: 28.0}
VALID_TAIL = (
    '{"results": [{"id": "c1", "relevance": 8, "emotion": 7, "social": 9, "reason": "海边"}]}'
)


def seconds(answer: str) -> tuple[float, str]:
    started = time.perf_counter()
    try:
        extract_json_object(answer)
        outcome = "object found"
    except RerankFailed:
        outcome = "refused"
    return time.perf_counter() - started, outcome


def main() -> None:
    print(f"{'answer':<34} {'now':>10} {'baseline':>10}  outcome")
    for count, baseline in BASELINE_S.items():
        took, outcome = seconds("{" * count)
        print(f"{count:>8,} x '{{'{'':<22} {took:>9.4f}s {baseline:>9.1f}s  {outcome}")
    prose = "好的，结果如下 {注意：分数 0-10}：\n```json\n" + VALID_TAIL + "\n```"
    took, outcome = seconds(prose)
    print(f"{'an ordinary fenced answer':<34} {took:>9.4f}s {'':>10}  {outcome}")


if __name__ == "__main__":
    main()
