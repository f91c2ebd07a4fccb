"""`peitu`: index a photo library, recommend photos for a text, run the bot or the server."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cli.eval import add_eval_parser
from config import Settings, SettingsInvalid, load_settings
from index.errors import PeiTuError

log = logging.getLogger("peitu")

Handler = Callable[[argparse.Namespace, Settings], int]


def _add_index(sub: Any) -> None:
    p = sub.add_parser("index", help="scan the library, describe new photos, embed them")
    p.add_argument("--library", type=Path, help="photo folder (default: PEITU_LIBRARY)")
    p.add_argument(
        "--descriptions", type=Path, help="JSONL of existing descriptions (no vision calls)"
    )
    p.add_argument(
        "--rebuild", action="store_true", help="re-embed everything from stored descriptions"
    )
    p.add_argument(
        "--describer",
        choices=("auto", "vision", "offline"),
        default="auto",
        help="offline: OCR + ImageNet tags + EXIF, no model endpoint; auto (default): offline "
        "only when the vision endpoint is DashScope and no API key is set (a local Ollama or "
        "vLLM needs no key). --descriptions wins over both",
    )
    p.add_argument(
        "--redescribe",
        action="store_true",
        help="describe every photo again with the chosen describer and use that description, "
        "even over better ones (imported captions > vision model > offline); without it a run "
        "never replaces a description by a worse tier and never repeats one",
    )
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def _add_recommend(sub: Any) -> None:
    p = sub.add_parser("recommend", help="recommend photos for a piece of text")
    p.add_argument("text", nargs="?", help="the text to find photos for")
    p.add_argument("--top-k", type=int, help="how many photos (default: PEITU_TOP_K_FINAL)")
    p.add_argument(
        "--batch", type=Path, help="file with one text per line; prints one JSON per line"
    )
    p.add_argument("--no-rerank", action="store_true", help="skip the LLM; vector order only")
    p.add_argument(
        "--time-place",
        choices=("prefer", "strict", "off"),
        help="time/place words in the text: prefer photos of them (default: PEITU_TIME_PLACE), "
        "only them, or ignore them",
    )
    p.add_argument(
        "--closest", action="store_true", help="show the closest photos even when none fits"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="peitu", description=__doc__)
    parser.add_argument("--config", type=Path, help="TOML settings file (or PEITU_CONFIG)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_index(sub)
    _add_recommend(sub)
    add_eval_parser(sub)
    sub.add_parser("bot", help="run the WeChat bot (needs PEITU_WECHAT__ENDPOINT)")
    serve = sub.add_parser("serve", help="run the admin HTTP server and web page")
    serve.add_argument("--host", help="bind address (default: PEITU_SERVER__HOST)")
    serve.add_argument("--port", type=_port, help="port (default: PEITU_SERVER__PORT)")
    sub.add_parser("status", help="how many photos are indexed and when the last run was")
    return parser


def _port(text: str) -> int:
    """A TCP port number, or argparse's one-line error."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1 to 65535)")
    return int(text)


def _handlers() -> dict[str, Handler]:
    from cli import commands
    from cli.eval import run_eval

    return {
        "index": commands.run_index,
        "recommend": commands.run_recommend,
        "bot": commands.run_bot,
        "serve": commands.run_serve,
        "status": commands.run_status,
        "eval": run_eval,
    }


def _configure_logging(level: str, verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "chromadb", "sentence_transformers", "urllib3", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except SettingsInvalid as error:
        print(f"peitu: {error}", file=sys.stderr)
        return 2
    _configure_logging(settings.log_level, args.verbose)
    try:
        return _handlers()[args.command](args, settings)
    except PeiTuError as error:
        print(f"peitu: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("peitu: interrupted; the next run continues where this one stopped", file=sys.stderr)
        return 130


def emit_json(payload: dict[str, Any]) -> None:
    """Print one JSON object on one line (the CLI's machine-readable output)."""
    print(json.dumps(payload, ensure_ascii=False))


if __name__ == "__main__":
    raise SystemExit(main())
