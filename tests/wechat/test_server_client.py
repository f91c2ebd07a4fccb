"""`ServerFinder`, the bot's `PhotoFinder` over HTTP, against the real FastAPI app on a real port.

Its answers must be the core's answers, and the server's error answers the core's exceptions,
so that the bot replies the same whichever way it finds photos.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from bot.server_client import ServerFinder
from client import NotFound, ServerRefused, ServerUnavailable, error_for, result_from_json
from index.errors import (
    CatalogTooNew,
    DescribeFailed,
    IndexBusy,
    IndexMismatch,
    InvalidQuery,
    LibraryNotFound,
    ModelUnavailable,
    PeiTuError,
    PhotoChanged,
    PhotoUnreadable,
    Reason,
)
from index.models import RERANK_OFF, RERANK_USED, NoteKind, RerankState
from index.service import PeiTu
from server.app import create_app
from server.errors import error_body, status_for
from tests.server.conftest import TOKEN, serving
from tests.support.openai_server import FakeOpenAIServer
from tests.wechat.conftest import IndexedLibrary, core_settings
from tests.wechat.harness import free_port

SEA = "小孩子在海边玩水"  # photos the fake LLM judges fitting (its bigrams)


@pytest.fixture
def server_url(
    peitu: PeiTu, indexed_library: IndexedLibrary, openai_server: FakeOpenAIServer
) -> Iterator[str]:
    settings = core_settings(indexed_library, openai_server.base_url, admin_token=TOKEN)
    with serving(create_app(peitu, settings)) as url:
        yield url


@pytest.fixture
def finder(server_url: str) -> Iterator[ServerFinder]:
    finder = ServerFinder(server_url, TOKEN, timeout_s=30)
    yield finder
    finder.close()


def without_timings(answer: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in answer.items() if key != "timings_ms"}


def test_recommend_and_status_are_the_cores_answers(finder: ServerFinder, peitu: PeiTu) -> None:
    over_http = finder.recommend(SEA)
    assert over_http.results
    assert without_timings(over_http.to_dict()) == without_timings(peitu.recommend(SEA).to_dict())
    status, core = finder.status(), peitu.status()
    assert (status.photos, status.indexing, status.problem) == (30, core.indexing, core.problem)
    assert status.last_index_at == core.last_index_at


# Each text makes the core say something besides photos (nothing fits, the closest anyway, a
# time it had to drop: the library's photos have no dates), or nothing when a time it read
# changed nothing (a note about it appears only when it changed the answer).
NOTED = {
    "火星基地的机器人": [NoteKind.NOTHING_FITS],
    "?火星基地的机器人": [NoteKind.CLOSEST],
    "去年夏天小孩子在海边玩水": [],
    "!去年夏天小孩子在海边玩水": [NoteKind.UNDERSTOOD, NoteKind.RELAXED],
}


@pytest.mark.parametrize("text", NOTED)
def test_notes_and_flags_are_the_cores(finder: ServerFinder, peitu: PeiTu, text: str) -> None:
    over_http, core = finder.recommend(text), peitu.recommend(text)
    assert [note.kind for note in core.notes] == NOTED[text]
    assert over_http == replace(core, timings_ms=over_http.timings_ms)  # every field


def test_the_rerank_state_is_the_cores(
    finder: ServerFinder, peitu: PeiTu, openai_server: FakeOpenAIServer
) -> None:
    assert finder.recommend(SEA).rerank == peitu.recommend(SEA).rerank == RERANK_USED
    assert finder.recommend(SEA, rerank=False).rerank == RERANK_OFF
    openai_server.set_mode("rerank", malformed=True)  # the LLM answers garbage
    over_http, core = finder.recommend(SEA), peitu.recommend(SEA)
    assert over_http.rerank.state is RerankState.FAILED and over_http.rerank.reason
    assert "no JSON object" in over_http.rerank.reason
    assert over_http == replace(core, timings_ms=over_http.timings_ms)
    assert [note.kind for note in over_http.notes] == [NoteKind.RERANK_FAILED]


def test_an_answer_without_the_typed_fields_is_refused() -> None:
    # A server older than the bot sends only the joined `message`: the bot does not guess.
    old = {"query": "q", "reranked": False, "message": "a；b", "results": [], "timings_ms": {}}
    with pytest.raises(ServerUnavailable, match="older than the bot"):
        result_from_json(old)


def test_photo_path_is_a_copy_of_the_original(finder: ServerFinder, peitu: PeiTu) -> None:
    photo_id = peitu.recommend(SEA).results[0].photo_id
    original = peitu.photo_path(photo_id)
    assert original is not None
    copy = finder.photo_path(photo_id)
    assert copy is not None and copy != original
    assert copy.name == original.name and copy.read_bytes() == original.read_bytes()
    assert finder.photo_path(photo_id) == copy  # the second send reuses the copy
    assert finder.photo_path("0" * 64) is None  # not in the index


def test_a_photo_whose_file_left_the_library_is_none(finder: ServerFinder, peitu: PeiTu) -> None:
    result = peitu.recommend(SEA).results[-1]
    original = peitu.photo_path(result.photo_id)
    assert original is not None
    moved = original.with_name(original.name + ".away")
    original.rename(moved)
    try:
        assert finder.photo_path(result.photo_id) is None
    finally:
        moved.rename(original)


def test_empty_text_is_the_cores_invalid_query(finder: ServerFinder) -> None:
    with pytest.raises(InvalidQuery):
        finder.recommend("   ")


def test_a_wrong_token_is_refused(server_url: str) -> None:
    finder = ServerFinder(server_url, "wrong-token")
    try:
        with pytest.raises(ServerRefused, match="PEITU_BOT__SERVER_TOKEN"):
            finder.status()
    finally:
        finder.close()


def test_no_server_is_server_unavailable() -> None:
    finder = ServerFinder(f"http://127.0.0.1:{free_port()}", TOKEN, timeout_s=5)
    try:
        with pytest.raises(ServerUnavailable):
            finder.recommend(SEA)
    finally:
        finder.close()


CORE_ERRORS = [
    InvalidQuery("empty text"),
    IndexBusy("j1"),
    LibraryNotFound("photo library not found or not a folder: /x"),
    IndexMismatch("the index was built with another model"),
    PhotoUnreadable("upload.jpg", "too_large", "9 MB"),
    PhotoUnreadable("upload.bin", "corrupt", "?"),
    DescribeFailed("vision model failed"),
    PhotoChanged("replaced while indexing"),
    ModelUnavailable("model loading"),
    CatalogTooNew("catalog version 9"),
]


@pytest.mark.parametrize("raised", CORE_ERRORS, ids=lambda error: type(error).__name__)
def test_the_servers_error_answers_become_the_cores_exceptions_again(raised: PeiTuError) -> None:
    """What `server/errors.py` answers for a core error, the bot turns back into that error."""
    error = error_for(status_for(raised), error_body(raised))
    assert type(error) is type(raised)
    if isinstance(raised, IndexBusy):
        assert isinstance(error, IndexBusy) and error.running_job_id == "j1"
    if isinstance(raised, PhotoUnreadable):
        assert isinstance(error, PhotoUnreadable) and error.reason == raised.reason


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (401, {"detail": "wrong admin token"}, ServerRefused),
        (403, {"detail": "wrong admin token"}, ServerRefused),
        (404, {"detail": "Not Found"}, NotFound),
        (500, {"detail": "internal server error"}, ServerUnavailable),
        (502, {"detail": "Bad Gateway"}, ServerUnavailable),  # a proxy, not the core
        (409, {"detail": "x", "error": "NoSuchError"}, ServerUnavailable),
    ],
)
def test_other_error_answers_are_the_bots_own(
    status: int, body: dict[str, Any], expected: type[PeiTuError]
) -> None:
    assert type(error_for(status, body)) is expected


def test_a_reason_this_bot_does_not_know_is_unreadable() -> None:
    body = {"detail": "not a readable image (from_a_newer_server): ?", "error": "PhotoUnreadable"}
    error = error_for(415, {**body, "reason": "from_a_newer_server"})
    assert isinstance(error, PhotoUnreadable) and error.reason is Reason.UNREADABLE
