"""Chat commands: parse what a person typed, and word the replies. No wechaty types here.

Commands (the prefix is `ChatSettings.command_prefix`, "/" by default; a full-width "／" works
too): `/配图 <文案>` (also `配图：<文案>` and `配图 <文案>` without the prefix), `/相似`, `/帮助`,
`/状态`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from bot.ports import IndexStatusView
from index.error_words import UNEXPECTED, words_for
from index.errors import PeiTuError
from index.models import NoteKind, RecommendResult, RerankState


class Kind(StrEnum):
    PEITU = "配图"
    SIMILAR = "相似"
    HELP = "帮助"
    STATUS = "状态"
    PAIR = "绑定"  # /绑定 123456: the pairing code (bot/access.py)
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Command:
    """One parsed command. `text` is the 配图 text (trimmed to the limit when `trimmed`)."""

    kind: Kind
    text: str = ""
    trimmed: bool = False
    name: str = ""  # the command as typed, for `Kind.UNKNOWN`


_NAMES: dict[str, Kind] = {
    "配图": Kind.PEITU,
    "相似": Kind.SIMILAR,
    "帮助": Kind.HELP,
    "状态": Kind.STATUS,
    "绑定": Kind.PAIR,
    "help": Kind.HELP,
}
_COLON_FORM = re.compile(r"^配图\s*[:：]")
# "配图 终于学会冲浪了": how people type it, a space and no slash. A text after the space is
# needed ("配图" alone, or "配图真好看", stays chat).
_SPACE_FORM = re.compile(r"^配图[\s\u3000\u2005]+(?=\S)")
_LEADING_MENTIONS = re.compile(r"^(?:@[^\s\u2005]+[\s\u2005]*)+")
_ARGUMENT_JUNK = " \t\r\n\u2005\u3000:：,，"
_NAME_LIMIT = 20
REASON_CHARS = 60
# The notes a chat reply leaves out: a failed rerank has its own line (`NOTE_NOT_RERANKED`),
# and how to configure the reranker is for the admin's page, not for the chat.
_UNSAID_NOTES = frozenset({NoteKind.RERANK_FAILED, NoteKind.RERANK_OFF})
NOTE_NOT_RERANKED = "（排序模型暂时不可用，已按匹配度排序）"
CLOSEST_MARK = "（最接近，不太合适）"
SORRY = UNEXPECTED.chat  # also the reply to an error no one raised on purpose
IMAGE_GONE = "刚才那张图片取不到了，请重新发送图片后再试。"


def parse_command(text: str, prefix: str = "/", max_text_chars: int = 300) -> Command | None:
    """The command in `text`, or None when `text` is ordinary chat.

    Leading @-mentions are ignored. Unknown `/xxx` gives `Kind.UNKNOWN` (unless the prefix is
    empty, where every message would otherwise be an unknown command).
    """
    body = strip_mentions(text)
    for form in (_COLON_FORM, _SPACE_FORM):
        if form.match(body):
            return _peitu(form.sub("", body, count=1), max_text_chars)
    rest = _after_prefix(body, prefix)
    if rest is None:
        return None
    kind, argument = _split_name(rest)
    if kind is Kind.PEITU:
        return _peitu(argument, max_text_chars)
    if kind is Kind.UNKNOWN:
        return Command(Kind.UNKNOWN, name=argument[:_NAME_LIMIT]) if prefix else None
    if kind is Kind.PAIR:
        return Command(Kind.PAIR, argument.strip(_ARGUMENT_JUNK)[:_NAME_LIMIT])
    return Command(kind)


def strip_mentions(text: str) -> str:
    """`text` without leading "@name " mentions and surrounding white space."""
    return _LEADING_MENTIONS.sub("", text.strip()).strip()


def _after_prefix(body: str, prefix: str) -> str | None:
    for candidate in dict.fromkeys((prefix, _full_width(prefix))):
        if body.startswith(candidate):
            return body[len(candidate) :]
    return None


def _full_width(text: str) -> str:
    """ASCII punctuation and letters as their full-width forms ("/" -> "／")."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def _split_name(rest: str) -> tuple[Kind, str]:
    """(kind, argument) for known names, else (UNKNOWN, the typed name)."""
    lowered = rest.lower()
    for name, kind in _NAMES.items():
        if lowered.startswith(name):
            argument = rest[len(name) :]
            # "/配图今天…" is common; other commands take no argument, so "/状态栏" is unknown.
            if kind in (Kind.PEITU, Kind.PAIR) or not argument.strip(_ARGUMENT_JUNK):
                return kind, argument
    words = rest.split(maxsplit=1)
    return Kind.UNKNOWN, words[0] if words else ""


def _peitu(argument: str, max_text_chars: int) -> Command:
    text = argument.strip(_ARGUMENT_JUNK)
    if len(text) <= max_text_chars:
        return Command(Kind.PEITU, text)
    return Command(Kind.PEITU, text[:max_text_chars].rstrip(), trimmed=True)


def help_text(prefix: str = "/") -> str:
    """What the bot can do, and every form a person may type."""
    wide = _full_width(prefix)
    return "\n".join(
        [
            "我可以从相册里为你的文案挑照片：",
            f"1. {prefix}配图 <文案> — 为一段文字挑照片，例如：{prefix}配图 今天蓝天白云",
            f"   也可以写成：{prefix}配图今天蓝天白云、{wide}配图 今天蓝天白云、配图 今天蓝天白云、"
            "配图：今天蓝天白云",
            f"   {prefix}配图! <文案> — 只要文中时间地点（如 去年夏天、在大理）的照片；"
            f"{prefix}配图? <文案> — 没有合适的也显示最接近的",
            f"2. {prefix}相似 — 先发一张图片，再发送 {prefix}相似，找相册里相似的照片",
            f"3. {prefix}状态 — 相册里已索引了多少张照片",
            f"4. {prefix}帮助（或 {prefix}help）— 显示这段说明",
            "在群里使用时请先 @我，例如：@配图 " + f"{prefix}配图 周末爬山",
        ]
    )


def try_hint(prefix: str = "/") -> str:
    """The short hint after a weak answer: how to ask so that better photos come back."""
    return (
        f"还可以试试：写得具体些（人物、地点、颜色、心情），例如「{prefix}配图 傍晚海边的橙色晚霞」；"
        f"或发一张图片再发 {prefix}相似。"
    )


def usage_text(prefix: str = "/") -> str:
    """The reply to an empty `/配图`."""
    return f"请在 {prefix}配图 后面写上文案，例如：{prefix}配图 今天蓝天白云"


def unknown_command_text(name: str, prefix: str = "/") -> str:
    """The reply to `/xxx` the bot does not know."""
    shown = f"{prefix}{name}" if name else prefix
    return f"不认识的命令「{shown}」。\n" + help_text(prefix)


def photo_hint_text(prefix: str) -> str:
    """The one line the bot says when a person sends it a photo in a 1:1 chat."""
    return f"收到图片。发 {prefix}相似 找相册里和它相似的照片。"


def no_recent_image_text(prefix: str, minutes: int) -> str:
    """The reply to `/相似` when the person sent no image recently."""
    return f"请先发一张图片，再在 {minutes} 分钟内发送 {prefix}相似。"


def rate_limited_text(retry_after_s: float, per_minute: int) -> str:
    """The reply to a person over the per-minute limit."""
    seconds = max(1, math.ceil(retry_after_s))
    return f"请求太频繁了（每分钟最多 {per_minute} 次），请 {seconds} 秒后再试。"


def trimmed_note(max_text_chars: int) -> str:
    return f"（文字超过 {max_text_chars} 字，只用了前 {max_text_chars} 字）"


def recommend_text(
    result: RecommendResult,
    *,
    similar: bool = False,
    trimmed_to: int | None = None,
    prefix: str = "/",
) -> str:
    """The text reply for a recommendation: a title and one numbered line per photo.

    `result.results` must be exactly the photos that will be sent, in order. A 配图 answer the
    LLM failed to rank gets `NOTE_NOT_RERANKED` (the failure's detail is for the log); with no
    photos the core's message (naming the closest subject) is the answer. The core's other
    notes (e.g. a time condition it had to drop) follow the list. A photo shown only because
    the closest were asked for is marked `CLOSEST_MARK`; a weak 配图 answer (nothing, or only
    such photos) ends with a short "还可以试试" hint.
    """
    lines = [trimmed_note(trimmed_to)] if trimmed_to is not None else []
    if not result.results:
        lines.append(result.message or "没有找到相关的照片。")
        if result.nothing_fits:
            lines.append(f"想看最接近的照片，请在文案前加“?”：{prefix}配图? 文案")
        elif not similar:
            lines.append(try_hint(prefix))
        return "\n".join(lines)
    count = len(result.results)
    title = f"相册里和这张图相似的照片（{count} 张）：" if similar else None
    lines.append(title or f"为「{_short(result.query, 20)}」挑了 {count} 张照片：")
    lines += [
        f"{n}. {'' if r.fits else CLOSEST_MARK}{_one_line(r.reason)}"
        for n, r in enumerate(result.results, start=1)
    ]
    notes = [note.text for note in result.notes if note.kind not in _UNSAID_NOTES]
    if notes:
        lines.append("注：" + "；".join(notes))
    # Only a failed rerank is worth a note: with reranking switched off, 匹配度 order is the plan.
    if not similar and result.rerank.state is RerankState.FAILED:
        lines.append(NOTE_NOT_RERANKED)
    if not similar and not any(r.fits for r in result.results):
        lines.append(try_hint(prefix))
    return "\n".join(lines)


def status_text(status: IndexStatusView) -> str:
    """How many photos are indexed, when the last index run ended, and whether one runs now."""
    lines = [f"相册里已索引 {status.photos} 张照片。"]
    lines.append(f"上次索引：{_when(status.last_index_at)}")
    if status.indexing:
        lines.append("正在索引中，新照片稍后才能找到。")
    if status.problem:  # the core's English detail is for the admin's log, not the chat
        lines.append("相册索引需要重建，请联系管理员（网页「索引管理」里点「重建索引」）。")
    return "\n".join(lines)


def error_text(error: PeiTuError) -> str:
    """A polite reply for an error the core raised on purpose (its row's `chat` line)."""
    return words_for(error).chat


def _when(moment: datetime | None) -> str:
    # Stored in UTC; the person reads the server's local time.
    return moment.astimezone().strftime("%Y-%m-%d %H:%M") if moment is not None else "还没有索引过"


def _one_line(text: str) -> str:
    return _short(" ".join(text.split()), REASON_CHARS)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
