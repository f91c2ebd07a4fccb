"""`peitu eval`: measure the recommend path on a captioned evaluation set."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cli.evaluation import DESCRIBERS, PROTOCOLS, VARIANTS, EvalReport, EvalRequest
from cli.words import say
from config import Settings
from index.errors import InvalidQuery


def add_eval_parser(sub: Any) -> None:
    """The `eval` subcommand's arguments."""
    p = sub.add_parser(
        "eval",
        help=say(
            "在带标注的照片上测 Recall@k / MRR / nDCG（开发用）",
            "measure Recall@k / MRR / nDCG of recommend on captioned photos",
        ),
    )
    p.add_argument("--captions", type=Path, required=True, help="captions JSONL (shared/eval)")
    p.add_argument("--images", type=Path, required=True, help="folder holding the images")
    p.add_argument("--protocol", choices=PROTOCOLS, default="rich", help="description/query split")
    p.add_argument(
        "--variant",
        choices=sorted(VARIANTS),
        help="first stage to measure (default: as configured)",
    )
    p.add_argument("--limit", type=int, help="take only the first N captioned photos")
    p.add_argument(
        "--queries", type=int, help="ask only N of the queries, evenly spread (default: all)"
    )
    p.add_argument(
        "--describer",
        choices=DESCRIBERS,
        default="captions",
        help="who describes the photos: captions (the protocol's, default) or offline (the "
        "offline describer, no vision model; also runs it without its object detector as the "
        "baseline, unless --no-baseline)",
    )
    p.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with --describer offline: also measure the offline describer without detector",
    )
    p.add_argument(
        "--rerank",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="rerank with the LLM (default: --no-rerank, first stage only)",
    )
    p.add_argument(
        "--work-dir", type=Path, help="keep the eval index here (default: a temp folder)"
    )
    p.add_argument(
        "--offdomain",
        type=Path,
        help="texts no photo fits, one a line: also report the share of them answered "
        '"nothing fits" and the share of real queries that still get photos',
    )
    p.add_argument("--json", action="store_true", help="print one JSON object per run")


def run_eval(args: argparse.Namespace, settings: Settings) -> int:
    """Run one evaluation and print its figures."""
    from cli.evaluation import offline_baseline, run_evaluation

    for name in ("limit", "queries"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise InvalidQuery(f"--{name} must be at least 1")
    if args.work_dir is not None and args.describer == "offline" and args.baseline:
        raise InvalidQuery("--work-dir keeps one run: add --no-baseline")
    request = EvalRequest(
        captions=args.captions,
        images=args.images,
        protocol=args.protocol,
        variant=args.variant,
        limit=args.limit,
        rerank=args.rerank,
        work_dir=args.work_dir,
        describer=args.describer,
        max_queries=args.queries,
        offdomain=args.offdomain,
    )
    runs = [settings]
    if args.describer == "offline" and args.baseline:
        runs.insert(0, offline_baseline(settings))
    for run_settings in runs:
        report = run_evaluation(run_settings, request)
        print(json.dumps(report.to_dict(), ensure_ascii=False) if args.json else _human(report))
    return 0


def _human(report: EvalReport) -> str:
    figures = "  ".join(f"{name} {value:.3f}" for name, value in report.metrics.items())
    counts = report.counts
    timing = report.timing
    lines = [
        f"protocol {report.protocol}, variant {report.variant}, rerank {report.rerank}, "
        f"described by {report.describer}",
        figures,
        f"{counts['queries']} queries over {counts['gallery']} photos "
        f"({counts['distractors']} distractors, {counts['index_failed']} failed to index)",
        f"index {timing['index_s']:.1f} s, queries {timing['queries_s']:.1f} s "
        f"(median {timing['query_ms_median']:.1f} ms, p95 {timing['query_ms_p95']:.1f} ms)",
    ]
    if "unknown_descriptions" in counts:
        share = counts["unknown_descriptions"] / max(1, counts["gallery"])
        lines.append(
            f"{counts['unknown_descriptions']} photos described as unknown ({share:.1%}); "
            f"describing {timing.get('describe_ms_per_photo', 0.0):.0f} ms a photo "
            f"({timing.get('describe_cpu_ms_per_photo', 0.0):.0f} ms of CPU)"
        )
    lines += _nothing_fits_lines(report.nothing_fits)
    return "\n".join(lines)


def _nothing_fits_lines(figures: dict[str, Any]) -> list[str]:
    if not figures:
        return []
    return [
        f"nothing fits: {figures['offdomain_no_photos']:.0%} of {figures['offdomain']} "
        f"off-domain texts get no photos; {figures['real_with_photos']:.1%} of real queries "
        "still get photos"
    ]
