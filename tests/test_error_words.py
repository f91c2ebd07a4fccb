"""The one table of what the product says for each core error (`index/error_words.py`).

Every core error has a row, every row is reached by the errors it names, and its words are
Chinese; the server, the bot and the CLI each read their column of that row.
"""

from __future__ import annotations

import re

import pytest

import index.errors
from bot.commands import error_text
from cli.words import error_line
from index.error_words import ERRORS, UNEXPECTED, ErrorWords, words_for
from index.errors import PeiTuError, PhotoUnreadable, Reason
from server.errors import error_body, status_for

CORE_ERRORS = [
    kind
    for kind in vars(index.errors).values()
    if isinstance(kind, type) and issubclass(kind, PeiTuError) and kind is not PeiTuError
]


def example(row: ErrorWords) -> PeiTuError:
    """An error of the row's kind (and of one of its reasons)."""
    if row.kind is PhotoUnreadable:
        reason = min(row.reasons) if row.reasons else Reason.CORRUPT
        return PhotoUnreadable("a.jpg", reason, "detail")
    return row.kind("detail")


@pytest.mark.parametrize("kind", CORE_ERRORS, ids=lambda kind: kind.__name__)
def test_every_core_error_has_words(kind: type[PeiTuError]) -> None:
    assert any(issubclass(kind, row.kind) for row in ERRORS), f"no row for {kind.__name__}"


@pytest.mark.parametrize("row", ERRORS, ids=lambda row: f"{row.kind.__name__}-{row.status}")
def test_each_row_is_the_one_its_errors_find(row: ErrorWords) -> None:
    assert words_for(example(row)) is row  # no row before it takes its errors


@pytest.mark.parametrize("row", [*ERRORS, UNEXPECTED], ids=lambda row: row.kind.__name__)
def test_the_words_are_chinese(row: ErrorWords) -> None:
    for line in (row.page, row.chat, row.cli):
        assert re.search(r"[\u4e00-\u9fff]", line), line


@pytest.mark.parametrize("row", ERRORS, ids=lambda row: f"{row.kind.__name__}-{row.status}")
def test_every_edge_speaks_from_the_row(row: ErrorWords, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEITU_LANG", "zh")
    error = example(row)
    assert status_for(error) == row.status
    assert error_body(error)["message"] == row.page
    assert error_text(error) == row.chat
    assert error_line(error) == f"{row.cli}（{error}）"


def test_an_error_without_a_row_is_the_unexpected_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEITU_LANG", "zh")
    error = PeiTuError("anything else")
    assert (status_for(error), error_text(error)) == (500, UNEXPECTED.chat)
    assert error_line(error) == "出错了（anything else）"
