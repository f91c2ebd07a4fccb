"""The CLI's commands. Each builds the app once from settings (the composition root).

`index.wiring` (chromadb, jieba, ...) is imported by the commands that build the app, not here:
`peitu recommend` through a server (`PEITU_SERVER__URL`) never needs it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.progress import progress_output
from cli.words import say
from config import Settings
from index.errors import InvalidQuery, PeiTuError
from index.indexing.journal import JobJournal
from index.library.names import readable_path
from index.models import IndexReport, ProgressCallback

if TYPE_CHECKING:
    from index.indexing.indexer import IndexMode
    from index.service import PeiTu

Answer = Callable[[str], dict[str, Any]]  # one text -> the JSON of `peitu recommend --json`


def build_app(settings: Settings, **parts: Any) -> PeiTu:
    """`index.wiring.build_app`, imported when a command needs the index."""
    from index.wiring import build_app as build

    return build(settings, **parts)


def run_index(args: argparse.Namespace, settings: Settings) -> int:
    library = args.library or settings.library
    if library is not None:
        settings = settings.model_copy(update={"library": library.expanduser().resolve()})
    app = build_app(settings, descriptions=args.descriptions, describer=args.describer)
    mode: IndexMode = "rebuild" if args.rebuild else "incremental"
    with progress_output(terminal=not args.json and sys.stderr.isatty()) as progress:
        report = _journaled_index(app, settings, mode, progress, redescribe=args.redescribe)
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        print(_summary(report))
    return 0 if report.failed == 0 else 3


def _journaled_index(
    app: PeiTu,
    settings: Settings,
    mode: IndexMode,
    progress: ProgressCallback | None,
    redescribe: bool = False,
) -> IndexReport:
    """Index, writing progress to the data folder so a server (the web page) shows it live."""
    journal = JobJournal(settings.data_dir.expanduser())
    job_id = uuid.uuid4().hex[:12]

    def both(phase: str, done: int, total: int) -> None:
        if not started:  # the lock is held once progress comes: the journal is ours
            journal.start(job_id, mode, "external")
            started.append(True)
        journal.progress(phase, done, total)
        if progress is not None:
            progress(phase, done, total)

    started: list[bool] = []
    try:
        report = app.index(mode, progress=both, job_id=job_id, redescribe=redescribe)
    except BaseException as error:
        journal.finish(
            "cancelled" if isinstance(error, KeyboardInterrupt) else "failed", None, str(error)
        )
        raise
    state = "cancelled" if report.cancelled else "succeeded"
    journal.finish(state, report.to_dict(), None)
    return report


def _summary(report: IndexReport) -> str:
    lines = [
        f"扫描 {report.scanned} 张：新增 {report.new}，未变 {report.unchanged}，"
        f"移动 {report.moved}，移除 {report.removed}",
        f"描述 {report.described} 张，向量化 {report.embedded} 张，失败 {report.failed} 张",
    ]
    if report.visual_embedded or report.visual_failed:
        lines.append(f"视觉特征 {report.visual_embedded} 张，失败 {report.visual_failed} 张")
    if report.dates_ignored:
        lines.append(f"拍摄时间不可能（在未来）已当作未知：{report.dates_ignored} 张")
    if report.skipped:
        skipped = "，".join(f"{reason} {count}" for reason, count in sorted(report.skipped.items()))
        lines.append(f"跳过：{skipped}")
    lines += [f"  失败：{e}" for e in report.errors[:20]]
    return "\n".join(lines)


def check_recommend_args(args: argparse.Namespace) -> None:
    """The arguments of `peitu recommend`, checked before a model or server is looked for."""
    _check_top_k(args)
    if args.batch is None and not (args.text or "").strip():
        raise InvalidQuery(
            say(
                '请给出要配图的文字，例如：peitu recommend "今天蓝天白云"（或用 --batch 文件）',
                "give the text to find photos for, or --batch FILE",
            )
        )
    if args.batch is not None and not args.batch.is_file():
        raise InvalidQuery(
            say(f"找不到文字文件：{args.batch}", f"batch file not found: {args.batch}")
        )


def check_similar_args(args: argparse.Namespace) -> None:
    """The arguments of `peitu similar`: an image file that exists, or a photo id."""
    _check_top_k(args)
    if not Path(args.query).expanduser().is_file() and not _PHOTO_ID.fullmatch(args.query):
        raise InvalidQuery(
            say(
                f"找不到图片文件：{args.query}（也不是图库里照片的 photo_id）",
                f"not an image file nor a photo id: {args.query}",
            )
        )


def _check_top_k(args: argparse.Namespace) -> None:
    if args.top_k is not None and args.top_k < 1:
        raise InvalidQuery(say("--top-k 至少是 1", "--top-k must be at least 1"))


def require_photos(app: PeiTu) -> None:
    """Refuse to search an index that has no photo yet (before the embedding model loads):
    one line saying how to index, and exit code 1."""
    status = app.status()
    if status.photos > 0 or status.problem:  # a problem (another model's index) says itself
        return
    if status.indexing:
        raise EmptyIndex(
            say(
                "正在建第一次索引，还没有能搜的照片；过一会儿再试（peitu status 看进度）",
                "the first index is being built and no photo is searchable yet; try again "
                "shortly (`peitu status` shows the progress)",
            )
        )
    raise EmptyIndex(
        say(
            "索引里还没有照片。先建索引：peitu index --library 照片文件夹"
            "（没有视觉模型 API key 时自动用离线描述）；网页上是 索引管理 → 开始索引",
            "the index has no photos yet: run `peitu index --library PHOTO_FOLDER` first (photos "
            "are described offline when no vision API key is set), or 索引管理 → 开始索引 on the "
            "web page",
        )
    )


class EmptyIndex(PeiTuError):
    """The index has no photo to search."""


def run_recommend(args: argparse.Namespace, settings: Settings) -> int:
    check_recommend_args(args)
    options = {"rerank": not args.no_rerank, "time_place": args.time_place, "closest": args.closest}
    if settings.server.url and _recommend_through_server(args, settings, options):
        return 0
    app = build_app(settings)
    require_photos(app)

    def answer(text: str) -> dict[str, Any]:
        return app.recommend(text, args.top_k, **options).to_dict()

    _print_answers(args, answer, _library_file(app))
    return 0


def _recommend_through_server(
    args: argparse.Namespace, settings: Settings, options: dict[str, Any]
) -> bool:
    """Ask the server at `server.url`; False (after one line) when nothing answers there."""
    from cli.remote import PROBE_TIMEOUT_S, remote_recommender
    from client import ServerUnreachable

    token = settings.admin_token.get_secret_value() if settings.admin_token else None
    with remote_recommender(settings.server.url, token) as server:
        try:
            server.check_reachable(PROBE_TIMEOUT_S)
        except ServerUnreachable as error:
            line = say(
                f"PEITU_SERVER__URL 上没有 PeiTu 服务器响应（{error}），改在本机搜索（加载模型）",
                f"no PeiTu server answers at PEITU_SERVER__URL ({error}); "
                "searching here instead (loading the model)",
            )
            print(f"peitu: {line}", file=sys.stderr)
            return False
        print(
            f"peitu: {say('向 PeiTu 服务器查询：', 'asking the PeiTu server at ')}{server.url}",
            file=sys.stderr,
        )

        def answer(text: str) -> dict[str, Any]:
            return server.recommend(text, args.top_k, **options).to_dict()

        _print_answers(args, answer, lambda item: _local_copy(settings, item["path"]))
    return True


def _library_file(app: PeiTu) -> Callable[[dict[str, Any]], str]:
    """The photo's real file in the index's library ("" when it is gone)."""
    return lambda item: str(app.photo_path(item["photo_id"]) or "")


def _local_copy(settings: Settings, rel_path: str) -> str:
    """The server's photo in this machine's library, when it is there ("" otherwise)."""
    if settings.library is None:
        return ""
    path = settings.library / rel_path
    return str(path) if path.is_file() else ""


def _print_answers(
    args: argparse.Namespace, answer: Answer, local_path: Callable[[dict[str, Any]], str]
) -> None:
    if args.batch is not None:
        _recommend_batch(answer, args.batch)
        return
    payload = answer(args.text)
    print(json.dumps(payload, ensure_ascii=False) if args.json else _human(payload, local_path))


def run_similar(args: argparse.Namespace, settings: Settings) -> int:
    """`peitu similar FILE|PHOTO_ID`: a file that exists wins over a photo id of that name."""
    check_similar_args(args)
    app = build_app(settings)
    require_photos(app)
    query = Path(args.query).expanduser()
    if query.is_file():
        result = app.similar_to_image(query.read_bytes(), args.top_k)
    else:
        found = app.similar_to_photo(args.query, args.top_k)
        if found is None:
            raise InvalidQuery(
                say(f"图库里没有这张照片：{args.query}", f"no photo {args.query} in the library")
            )
        result = found
    payload = result.to_dict()
    print(
        json.dumps(payload, ensure_ascii=False)
        if args.json
        else _human(payload, _library_file(app))
    )
    return 0


_PHOTO_ID = re.compile("[0-9a-f]{64}")


def _recommend_batch(answer: Answer, batch: Path) -> None:
    """One JSON line per text; a text that fails is a line with its error, a server that
    fails (`ServerUnavailable`) ends the run."""
    from client import ServerUnavailable

    for line in batch.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            payload = answer(line)
        except ServerUnavailable:
            raise
        except PeiTuError as error:
            payload = {"query": line, "error": str(error)}
        print(json.dumps(payload, ensure_ascii=False), flush=True)


def _human(payload: dict[str, Any], local_path: Callable[[dict[str, Any]], str]) -> str:
    """The answer for a person, from the JSON of `--json` (the core's or a server's alike);
    `local_path` is the photo's file on this machine, "" to show the path as the answer has it."""
    lines = [f"「{payload['query']}」"]
    if payload["message"]:
        lines.append(payload["message"])
    if payload.get("nothing_fits") and not payload["results"]:
        lines.append("（加 --closest 或在文字前加 ? 仍然显示最接近的照片）")
    for r in payload["results"]:
        path = readable_path(local_path(r) or r["path"])
        lines.append(f"{r['rank']}. {path}  ({_score_label(r)})")
        lines.append(f"   {r['reason']}")
    return "\n".join(lines)


def _score_label(result: dict[str, Any]) -> str:
    """The one score a result is ordered by, named as the person reads it: 相似度 for a
    look-alike, 匹配度 for a text's photo (最接近 when it is under the line)."""
    if result.get("likeness") is not None:
        return f"相似度 {result['likeness']:.0f}"
    closest = "" if result.get("fits", True) else "，最接近，不太合适"
    return f"匹配度 {result['match']:.0f}{closest}"


def run_status(args: argparse.Namespace, settings: Settings) -> int:
    status = build_app(_reading_only(settings), describer="offline").status()
    last = status.last_index_at.isoformat() if status.last_index_at else "从未"
    print(f"已索引 {status.photos} 张（图库中 {status.files} 张），上次索引：{last}")
    if status.tiers:
        print("描述来源：" + "，".join(f"{_TIER_NAMES[t]} {n}" for t, n in status.tiers.items()))
    if status.indexing:
        print("正在索引中")
    if status.problem:
        print(status.problem)
    return 0


def _reading_only(settings: Settings) -> Settings:
    """Settings for a command that only reads the index: no LLM reranker, no vision client and
    no object detector get built (never used to read; their imports alone cost a second)."""
    rerank = settings.rerank.model_copy(update={"enabled": False})
    offline = settings.offline.model_copy(update={"detector_model": ""})
    return settings.model_copy(update={"rerank": rerank, "offline": offline})


_TIER_NAMES = {"imported": "导入", "vision": "视觉模型", "offline": "离线", "none": "未描述"}


def run_bot(args: argparse.Namespace, settings: Settings) -> int:
    from bot.main import run

    return run(settings)


def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    from server.main import run

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if overrides:
        server = settings.server.model_copy(update=overrides)
        settings = settings.model_copy(update={"server": server})
    return run(settings)


def run_doctor(args: argparse.Namespace, settings: Settings) -> int:
    """One line per check with its fix; 1 when any check failed."""
    from index.doctor import doctor_lines, run_checks

    checks = run_checks(settings)
    for line in doctor_lines(checks):
        print(line)
    failed = sum(c.level == "fail" for c in checks)
    print("全部正常。" if not failed else f"有 {failed} 项需要处理，见上面 ✗ 的行。")
    return 1 if failed else 0
