"""`peitu`: index a photo library, recommend photos for a text, run the bot or the server."""

# Only the standard library at module level: the `peitu` script imports this module before
# `main` can take over Ctrl-C, and a Ctrl-C while pydantic, torch or chromadb load must end in
# one line, not a traceback. Everything else is imported inside `main`.
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from cli.words import Parser, error_line, say

if TYPE_CHECKING:
    from config import Settings

log = logging.getLogger("peitu")
EXIT_INTERRUPTED = 130

Handler = Callable[[argparse.Namespace, "Settings"], int]
_NEED_EMBEDDER = frozenset({"index", "recommend"})


def _add_index(sub: Any) -> None:
    from index.library.descriptions import describer_choices  # the standard library alone

    p = sub.add_parser(
        "index",
        help=say(
            "扫描图库，描述新照片并向量化", "scan the library, describe new photos, embed them"
        ),
        description=say(
            "扫描图库：新照片由视觉模型（没有 API key 时用离线描述）写一段中文描述，再向量化存进索引。"
            "中途 Ctrl-C 不丢东西，下次接着做。",
            "Scan the library, describe new photos (offline when no API key is set) and embed "
            "them. Ctrl-C loses nothing: the next run continues.",
        ),
    )
    p.add_argument(
        "--library",
        type=Path,
        help=say("照片文件夹（默认 PEITU_LIBRARY）", "photo folder (default: PEITU_LIBRARY)"),
    )
    p.add_argument(
        "--descriptions",
        type=Path,
        help=say(
            "已有描述的 JSONL 文件（不调用视觉模型）",
            "JSONL of existing descriptions (no vision calls)",
        ),
    )
    p.add_argument(
        "--rebuild",
        action="store_true",
        help=say("用已存的描述重新向量化全部照片", "re-embed everything from stored descriptions"),
    )
    p.add_argument(
        "--describer",
        choices=describer_choices(),
        default="auto",
        help=say(
            "offline：本机离线描述（物体、人脸、文字、时间地点），不调用模型接口；"
            "auto（默认）：视觉接口是 DashScope 又没设 API key 时用离线，其余用视觉模型"
            "（本地 Ollama/vLLM 不需要 key）。--descriptions 优先于两者",
            "offline: OCR + ImageNet tags + EXIF, no model endpoint; auto (default): offline "
            "only when the vision endpoint is DashScope and no API key is set (a local Ollama or "
            "vLLM needs no key). --descriptions wins over both",
        ),
    )
    p.add_argument(
        "--redescribe",
        action="store_true",
        help=say(
            "用选定的描述方式把每张照片重新描述一遍并采用，即使原来的更好"
            "（导入 > 视觉模型 > 离线）；不加时从不降级、从不重复描述",
            "describe every photo again with the chosen describer and use that description, "
            "even over better ones (imported captions > vision model > offline); without it a "
            "run never replaces a description by a worse tier and never repeats one",
        ),
    )
    p.add_argument(
        "--json",
        action="store_true",
        help=say("结果输出为一个 JSON 对象", "print the summary as one JSON object"),
    )


def _add_recommend(sub: Any) -> None:
    p = sub.add_parser(
        "recommend",
        help=say("为一段文字找照片", "recommend photos for a piece of text"),
        description=say(
            "为一段文字找照片。设了 PEITU_SERVER__URL（一个运行中的 peitu serve，令牌 "
            "PEITU_ADMIN_TOKEN）时由服务器回答，本机不加载模型；那个地址没有响应时就在本机数据目录里搜。",
            "Find photos for a text. With PEITU_SERVER__URL set (a running `peitu serve`, token "
            "PEITU_ADMIN_TOKEN) the server answers and no model loads here; when nothing answers "
            "at that address, the command searches the data folder itself.",
        ),
    )
    p.add_argument("text", nargs="?", help=say("要配图的文字", "the text to find photos for"))
    p.add_argument(
        "--top-k",
        type=int,
        help=say(
            "要几张（默认 PEITU_TOP_K_FINAL）", "how many photos (default: PEITU_TOP_K_FINAL)"
        ),
    )
    p.add_argument(
        "--batch",
        type=Path,
        help=say(
            "每行一段文字的文件；每行输出一个 JSON",
            "file with one text per line; prints one JSON per line",
        ),
    )
    p.add_argument(
        "--no-rerank",
        action="store_true",
        help=say("不用大模型重排，只按向量顺序", "skip the LLM; vector order only"),
    )
    p.add_argument(
        "--time-place",
        choices=("prefer", "strict", "off"),
        help=say(
            "文字里的时间地点：prefer 优先那时那地的照片（默认 PEITU_TIME_PLACE），strict 只要它们，off 不管",
            "time/place words in the text: prefer photos of them (default: PEITU_TIME_PLACE), "
            "only them, or ignore them",
        ),
    )
    p.add_argument(
        "--closest",
        action="store_true",
        help=say("没有合适的照片时也显示最接近的", "show the closest photos even when none fits"),
    )
    p.add_argument(
        "--json", action="store_true", help=say("输出一个 JSON 对象", "print one JSON object")
    )


def _add_similar(sub: Any) -> None:
    p = sub.add_parser(
        "similar",
        help=say(
            "找和一张图长得像的照片", "photos that look like an image file or a library photo"
        ),
    )
    p.add_argument(
        "query",
        help=say(
            "一个图片文件，或图库里照片的 photo_id（sha256）",
            "an image file, or the photo_id (sha256) of a library photo",
        ),
    )
    p.add_argument(
        "--top-k",
        type=int,
        help=say(
            "要几张（默认 PEITU_TOP_K_FINAL）", "how many photos (default: PEITU_TOP_K_FINAL)"
        ),
    )
    p.add_argument(
        "--json", action="store_true", help=say("输出一个 JSON 对象", "print one JSON object")
    )


def build_parser() -> argparse.ArgumentParser:
    from cli.eval import add_eval_parser

    parser = Parser(
        prog="peitu",
        description=say(
            "配图：从你自己的照片库里为一段中文文案找照片。第一次用先跑 peitu doctor。",
            "PeiTu: find photos from your own library for a piece of Chinese text. "
            "First time? Run `peitu doctor`.",
        ),
    )
    parser.add_argument(
        "--config",
        type=Path,
        help=say("TOML 设置文件（或 PEITU_CONFIG）", "TOML settings file (or PEITU_CONFIG)"),
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help=say("输出调试日志", "debug logging")
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", title=say("命令", "commands")
    )
    _add_index(sub)
    _add_recommend(sub)
    _add_similar(sub)
    add_eval_parser(sub)
    sub.add_parser(
        "bot",
        help=say(
            "运行微信机器人（要 PEITU_WECHAT__ENDPOINT；设了 PEITU_BOT__SERVER_URL 时问那个服务器，自己不开索引）",
            "run the WeChat bot (needs PEITU_WECHAT__ENDPOINT; with PEITU_BOT__SERVER_URL it "
            "asks that PeiTu server instead of opening the index itself)",
        ),
        description=say(
            "连接 Wechaty puppet 服务（PEITU_WECHAT__ENDPOINT、PEITU_WECHAT__TOKEN），回答 "
            "/配图、/相似、/状态、/帮助，直到被中断。",
            "Connect to a Wechaty puppet service (PEITU_WECHAT__ENDPOINT, "
            "PEITU_WECHAT__TOKEN) and answer /配图, /相似, /状态 and /帮助 until interrupted.",
        ),
    )
    _add_serve(sub)
    sub.add_parser(
        "status",
        help=say(
            "索引了多少张、上次什么时候索引",
            "how many photos are indexed and when the last run was",
        ),
        description=say(
            "显示能搜到多少张、图库里有多少张、上次索引什么时候结束、现在是否在索引。只读。",
            "Print how many photos are findable, how many are in the library, when the "
            "last index run ended and whether one runs now. Read-only.",
        ),
    )
    sub.add_parser(
        "doctor",
        help=say(
            "检查图库、模型、接口、令牌和数据目录，并给出办法",
            "check the library, models, endpoints, token and data folder, with fixes",
        ),
        description=say(
            "每项检查一行（图库可读、向量模型在或能下载、视觉和大模型接口能通、管理令牌已设、"
            "数据目录可写），每行带上怎么处理。有一项不通过时退出码为 1。",
            "One line per check (library readable, embedding model present or "
            "downloadable, vision and LLM endpoints answer, admin token set, data folder "
            "writable), each with what to do. Exit code 1 when a check failed.",
        ),
    )
    return parser


def _add_serve(sub: Any) -> None:
    from config import ServerSettings  # pydantic: after main has taken over Ctrl-C

    defaults = ServerSettings()
    p = sub.add_parser(
        "serve",
        help=say("运行管理接口和网页", "run the admin HTTP server and web page"),
        description=say(
            "提供网页（/）和管理接口（/api，接口说明在 /openapi.json），直到被中断。"
            "监听 127.0.0.1 以外的地址需要 PEITU_ADMIN_TOKEN。",
            "Serve the web page (/) and the admin API (/api, its schema at /openapi.json) "
            "until interrupted. Listening beyond 127.0.0.1 needs PEITU_ADMIN_TOKEN.",
        ),
    )
    p.add_argument(
        "--host",
        help=say(
            f"监听地址（默认 {defaults.host}，或 PEITU_SERVER__HOST）",
            f"bind address (default: {defaults.host}, or PEITU_SERVER__HOST)",
        ),
    )
    p.add_argument(
        "--port",
        type=_port,
        help=say(
            f"端口（默认 {defaults.port}，或 PEITU_SERVER__PORT）",
            f"port (default: {defaults.port}, or PEITU_SERVER__PORT)",
        ),
    )


def _port(text: str) -> int:
    """A TCP port number, or argparse's one-line error."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(
            say(f"{text!r} 不是端口号（1 到 65535）", f"{text!r} is not a port number (1 to 65535)")
        )
    return int(text)


def _handlers() -> dict[str, Handler]:
    from cli import commands
    from cli.eval import run_eval

    return {
        "index": commands.run_index,
        "recommend": commands.run_recommend,
        "similar": commands.run_similar,
        "bot": commands.run_bot,
        "serve": commands.run_serve,
        "status": commands.run_status,
        "doctor": commands.run_doctor,
        "eval": run_eval,
    }


# Libraries that log every request or model load at INFO: only their warnings are shown.
QUIET_LOGGERS = (
    "httpx",
    "httpx2",
    "httpcore",
    "urllib3",
    "openai",
    "chromadb",
    "sentence_transformers",
    "transformers",
    "huggingface_hub",
    "filelock",
    "PIL",
)


def _configure_logging(level: str, verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in QUIET_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _interrupted_line(command: str) -> str:
    if command == "index":
        return say(
            "已中断，下次运行会接着做", "interrupted; the next run continues where this one stopped"
        )
    if command in ("serve", "bot"):
        return say("已停止", "stopped")
    return say("已中断", "interrupted")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; exit codes 0, 1 (an error), 2 (bad settings), 130 (Ctrl-C)."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    _CTRL_C.clear()
    previous = signal.signal(signal.SIGINT, _on_interrupt) if in_main_thread else None
    command: list[str] = []  # the command's name, once the arguments are read
    try:
        code = _run(argv, command)
        sys.stdout.flush()  # here, not at exit: a reader gone (`| head`) is caught below
    except BrokenPipeError:
        return _reader_gone()
    except BaseException as error:
        if not _was_interrupted(error):
            raise
        print(f"peitu: {_interrupted_line(command[0] if command else '')}", file=sys.stderr)
        if in_main_thread:
            _exit_now()  # the interpreter's shutdown, where a second Ctrl-C would kill us
        return EXIT_INTERRUPTED
    if in_main_thread:
        signal.signal(signal.SIGINT, previous)
    return code


EXIT_READER_GONE = 141  # as a command killed by SIGPIPE: the shell's 128 + 13


def _reader_gone() -> int:
    """The reader of our output closed its end (`peitu recommend … | head`): stop quietly,
    as other commands do, with nothing more written and no traceback."""
    with contextlib.suppress(OSError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush
    return EXIT_READER_GONE


_CTRL_C = threading.Event()  # set by the first Ctrl-C


def _was_interrupted(error: BaseException) -> bool:
    """A Ctrl-C, however it surfaced. The KeyboardInterrupt the handler raises can land inside
    a lock's own code (a thread pool's submit), which then fails with "RuntimeError: release
    unlocked lock" instead: that error, after a Ctrl-C, is the Ctrl-C too."""
    return isinstance(error, KeyboardInterrupt) or (
        _CTRL_C.is_set() and not isinstance(error, SystemExit)
    )


def _on_interrupt(signum: int, frame: FrameType | None) -> None:
    """The first Ctrl-C stops the command as Python does (KeyboardInterrupt: threads finish
    the photo they are on, everything committed stays). A second one quits at once, without
    running the interpreter's shutdown: native threads (onnxruntime, torch) still running then
    would abort it ("terminate called without an active exception", exit 134). Every
    description and vector batch is committed as it is made, so nothing is lost."""
    _CTRL_C.set()
    signal.signal(signal.SIGINT, _quit_now)
    raise KeyboardInterrupt


def _quit_now(signum: int, frame: FrameType | None) -> None:
    os.write(2, f"peitu: {say('再次中断，立即退出', 'interrupted again; quitting now')}\n".encode())
    _exit_now()


def _exit_now() -> NoReturn:
    """Exit 130 without the interpreter's shutdown. After a Ctrl-C the command has unwound and
    everything it wrote is committed; what is left is tearing down native libraries, which
    takes a while, aborts while their threads run, and dies of a Ctrl-C that lands meanwhile
    (exit 134, or a death by SIGINT, instead of 130)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or broken pipe: nothing to flush to
            stream.flush()
    os._exit(EXIT_INTERRUPTED)


def _run(argv: Sequence[str] | None, command: list[str]) -> int:
    from config import SettingsInvalid, load_settings
    from index.errors import PeiTuError
    from index.search.model_source import ensure_model_obtainable

    args = build_parser().parse_args(argv)
    command.append(args.command)
    try:
        settings = load_settings(args.config)
    except SettingsInvalid as error:
        print(f"peitu: {error}", file=sys.stderr)
        return 2
    _configure_logging(settings.log_level, args.verbose)
    try:
        _check_arguments(args, settings)
        if args.command in _NEED_EMBEDDER and not _server_answers(args, settings):
            # Before the heavy imports and before describing a single photo: with no network
            # and nothing downloaded, one Chinese line within seconds.
            ensure_model_obtainable(settings.embedding.model)
        return _handlers()[args.command](args, settings)
    except PeiTuError as error:
        print(f"peitu: {error_line(error)}", file=sys.stderr)
        return 1


def _check_arguments(args: argparse.Namespace, settings: Settings) -> None:
    """What can be wrong with the command's arguments, found before any model is looked for."""
    from cli import commands

    if args.command == "index":
        _check_index_paths(args, settings)
    elif args.command == "recommend":
        commands.check_recommend_args(args)
    elif args.command == "similar":
        commands.check_similar_args(args)


def _server_answers(args: argparse.Namespace, settings: Settings) -> bool:
    """`peitu recommend` asks the server at PEITU_SERVER__URL: the model is the server's (if
    nothing answers there, the model is looked for when it loads, with the same line)."""
    return args.command == "recommend" and bool(settings.server.url)


def _check_index_paths(args: argparse.Namespace, settings: Settings) -> None:
    """The library and descriptions file of `peitu index`, checked before any model loads:
    a wrong path answers in a second, with the line the indexer would give after loading."""
    from index.describers.sidecar import SidecarFileInvalid
    from index.errors import LibraryNotFound

    library = args.library or settings.library
    if library is None:
        raise LibraryNotFound(
            say(
                "还没有设置图库：设置 PEITU_LIBRARY=照片文件夹，或加 --library 照片文件夹",
                "no photo library configured: set PEITU_LIBRARY or pass --library",
            )
        )
    if not library.expanduser().is_dir():
        root = library.expanduser().resolve()
        raise LibraryNotFound(
            say(
                f"图库文件夹不存在或不是文件夹：{root}",
                f"photo library not found or not a folder: {root}",
            )
        )
    if args.descriptions is not None and not args.descriptions.is_file():
        raise SidecarFileInvalid(
            say(
                f"找不到描述文件：{args.descriptions}",
                f"descriptions file not found: {args.descriptions}",
            )
        )


def emit_json(payload: dict[str, Any]) -> None:
    """Print one JSON object on one line (the CLI's machine-readable output)."""
    print(json.dumps(payload, ensure_ascii=False))


if __name__ == "__main__":
    raise SystemExit(main())
