"""The CLI's words: Chinese, or English when the user's locale asks for it.

`PEITU_LANG=en` (or `zh`) decides; otherwise the first of LC_ALL, LC_MESSAGES and LANG that is
set: English when it names English (`en_US.UTF-8`), Chinese for anything else (`zh_CN.UTF-8`,
`C.UTF-8`, unset). Standard library only: `--help` and argument errors import nothing else.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn


def english() -> bool:
    """Whether the user asked for English."""
    chosen = os.environ.get("PEITU_LANG", "").strip().lower()
    if chosen:
        return chosen.startswith("en")
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(name, "")
        if value:
            return value.lower().startswith("en")
    return False


def say(zh: str, en: str) -> str:
    """`zh`, or `en` when the user asked for English."""
    return en if english() else zh


class HelpFormatter(argparse.HelpFormatter):
    """argparse's layout with its fixed words in the user's language."""

    def add_usage(
        self, usage: str | None, actions: Any, groups: Any, prefix: str | None = None
    ) -> None:
        if prefix is None:  # "" is argparse's own prefix for a command's name in its usage
            prefix = say("用法：", "usage: ")
        super().add_usage(usage, actions, groups, prefix)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that speaks the user's language and, for a mistyped command or
    option, names the closest one ("您是不是想输入 index？")."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("add_help", False)
        super().__init__(*args, **kwargs)
        self._positionals.title = say("参数", "positional arguments")
        self._optionals.title = say("选项", "options")
        self.add_argument(
            "-h", "--help", action="help", help=say("显示这段帮助并退出", "show this help and exit")
        )

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        line = _translated(message)
        hint = self._suggestion(message)
        self.exit(2, f"{self.prog}: {say('错误：', 'error: ')}{line}{hint}\n")

    def _suggestion(self, message: str) -> str:
        wrong, known = _wrong_word(message, self._actions)
        if not wrong:
            return ""
        close = difflib.get_close_matches(wrong, known, n=1, cutoff=0.6)
        return say(f"。您是不是想输入 {close[0]}？", f". Did you mean {close[0]}?") if close else ""


def _wrong_word(message: str, actions: Sequence[argparse.Action]) -> tuple[str, list[str]]:
    """The word argparse refused and the words it would have taken instead."""
    choice = re.search(r"argument (\S+): invalid choice: '([^']*)'", message)
    if choice:
        for action in actions:
            names = {*action.option_strings, action.metavar, action.dest}
            if choice.group(1) in names and action.choices is not None:
                return choice.group(2), [str(c) for c in action.choices]
    unknown = re.search(r"unrecognized arguments: (\S+)", message)
    if unknown and unknown.group(1).startswith("-"):
        return unknown.group(1).split("=", 1)[0], _long_options(actions)
    return "", []


def _long_options(actions: Sequence[argparse.Action]) -> list[str]:
    """Every --option of a parser and of its commands (argparse reports a command's unknown
    option from the top parser)."""
    options = [o for a in actions for o in a.option_strings if o.startswith("--")]
    for action in actions:
        if isinstance(action, argparse._SubParsersAction):
            for parser in action.choices.values():
                options += _long_options(parser._actions)
    return options


_ARGPARSE_ZH = (
    (r"the following arguments are required: (.*)", r"缺少参数：\1"),
    (
        r"argument (\S+): invalid choice: '([^']*)' \(choose from (.*)\)",
        r"\1 没有 “\2” 这一项（可选：\3）",
    ),
    (r"argument (\S+): expected one argument", r"\1 后面要跟一个值"),
    (r"argument (\S+): invalid (\w+) value: '([^']*)'", r"\1 的值 “\3” 不对，要一个 \2"),
    (r"argument (\S+): (.*)", r"\1：\2"),
    (r"unrecognized arguments: (.*)", r"不认识的参数：\1"),
)


def _translated(message: str) -> str:
    if english():
        return message
    for pattern, chinese in _ARGPARSE_ZH:
        if re.fullmatch(pattern, message):
            return re.sub(pattern, chinese, message)
    return message


# The heads of the errors outside the core's table (`index/error_words.py`), by class name: the
# server's client (`client/`) and a describer's sidecar file.
_OTHER_HEADS = {
    "SidecarFileInvalid": "描述文件有问题",
    "ServerUnreachable": "连不上 PeiTu 服务器",
    "ServerUnavailable": "PeiTu 服务器回答了错误",
}


def error_line(error: Exception) -> str:
    """A PeiTu error for the user: as it is when it already speaks Chinese or the user asked for
    English, else a Chinese line with the English detail in brackets."""
    message = str(error)
    if english() or re.search(r"[\u4e00-\u9fff]", message):
        return message
    return f"{_head(error)}（{message}）"


def _head(error: Exception) -> str:
    """What the error is about: its row's `cli` head, else one of the CLI's own."""
    from index.error_words import UNEXPECTED, words_for  # not for --help
    from index.errors import PeiTuError

    row = words_for(error) if isinstance(error, PeiTuError) else UNEXPECTED
    if row is not UNEXPECTED:
        return row.cli
    names = (kind.__name__ for kind in type(error).__mro__)
    return next((_OTHER_HEADS[name] for name in names if name in _OTHER_HEADS), UNEXPECTED.cli)
