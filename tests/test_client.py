"""`client.ApiClient` against servers that answer wrongly: garbage, a web page with 200, a
proxy's error page, a refused token, no answer at all. (Its right answers, and the core's errors
coming back, are tested against the real server in tests/wechat/test_server_client.py and
tests/test_cli_fast.py.)"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import httpx
import pytest

from client import (
    ApiClient,
    Caller,
    NotFound,
    ServerRefused,
    ServerUnavailable,
    ServerUnreachable,
)
from index.errors import InvalidQuery

URL = "http://peitu.test:8000"
CALLER = Caller("the server", "the bot's token", "PEITU_BOT__SERVER_URL", "PEITU_BOT__SERVER_TOKEN")
Handler = Callable[[httpx.Request], httpx.Response]


def client_answered_by(handler: Handler) -> ApiClient:
    return ApiClient(URL, "token", CALLER, transport=httpx.MockTransport(handler))


def test_a_web_page_with_200_is_not_a_peitu_server() -> None:
    page = httpx.Response(200, html="<html><body>router login</body></html>")
    with (
        client_answered_by(lambda request: page) as api,
        pytest.raises(ServerUnavailable, match="is PEITU_BOT__SERVER_URL a PeiTu server"),
    ):
        api.recommend("海边", None)


def test_json_without_the_answers_fields_is_refused() -> None:
    with (
        client_answered_by(lambda request: httpx.Response(200, json={"results": "x"})) as api,
        pytest.raises(ServerUnavailable, match="unexpected recommendation answer"),
    ):
        api.recommend("海边", None)


def test_a_proxys_error_page_is_server_unavailable_with_its_status() -> None:
    bad_gateway = httpx.Response(502, text="<h1>502 Bad Gateway</h1>")
    with (
        client_answered_by(lambda request: bad_gateway) as api,
        pytest.raises(ServerUnavailable, match="answered 502: HTTP 502"),
    ):
        api.status()


def test_a_refused_token_names_the_setting_to_fix() -> None:
    refused = httpx.Response(401, json={"detail": "wrong admin token"})
    with client_answered_by(lambda request: refused) as api, pytest.raises(ServerRefused) as error:
        api.status()
    assert str(error.value).startswith("the server refused the bot's token (401: wrong admin")
    assert "set PEITU_BOT__SERVER_TOKEN to the server's PEITU_ADMIN_TOKEN" in str(error.value)


def test_a_missing_route_asks_whether_it_is_a_peitu_server() -> None:
    with (
        client_answered_by(lambda request: httpx.Response(404)) as api,
        pytest.raises(NotFound, match=r"/api/status not found \(HTTP 404\): is PEITU_BOT__"),
    ):
        api.status()


def test_fastapis_own_422_is_the_first_problem_as_invalid_query() -> None:
    problems = {"detail": [{"loc": ["body", "text"], "msg": "too long"}, {"msg": "other"}]}
    with (
        client_answered_by(lambda request: httpx.Response(422, json=problems)) as api,
        pytest.raises(InvalidQuery, match=r"^body\.text: too long$"),
    ):
        api.recommend("长" * 10, None)


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A server that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        accepted: list[socket.socket] = []
        stop = threading.Event()

        def accept() -> None:
            listener.settimeout(0.1)
            while not stop.is_set():
                try:
                    accepted.append(listener.accept()[0])
                except TimeoutError:
                    continue

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()


def test_a_server_that_hangs_is_unreachable_after_the_timeout(silent_server: str) -> None:
    with (
        ApiClient(silent_server, None, CALLER, timeout_s=0.5) as api,
        pytest.raises(ServerUnreachable, match=f"^{silent_server}: "),
    ):
        api.recommend("海边", None)
    with (
        ApiClient(silent_server, None, CALLER) as api,
        pytest.raises(ServerUnreachable, match=f"^{silent_server}: "),
    ):
        api.check_reachable(timeout_s=0.5)
