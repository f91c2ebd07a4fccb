# ruff: noqa: F811  (the fixture `browser` is imported from test_web)
"""What a browser is told, what another website may not do on a server without a token, and
how long a slow client may hold a connection."""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
import pytest

from server.security import CONTENT_SECURITY_POLICY, SECURITY_HEADERS
from tests.server.conftest import Served, ServerFactory
from tests.server.test_web import (
    TIMEOUT_MS,
    TOKEN,
    browser,  # noqa: F401  (a fixture)
    enter_token,
    file_payload,
    loaded_thumbnails,
    search,
)
from tests.server.web_support import make_png
from tests.support.core_fixtures import SettingsFactory, SmallLibrary

if TYPE_CHECKING:
    from playwright.sync_api import Browser


def _assert_security_headers(response: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (response.url, name)


def test_every_answer_carries_the_security_headers(indexed_server: Served) -> None:
    with indexed_server.client() as client:
        answers = [
            client.get("/"),
            client.get("/app.js"),
            client.get("/api/status"),
            client.get("/api/status", headers={"Authorization": "Bearer wrong"}),  # 401
            client.get("/api/no-such-route"),  # 404
            client.get("/healthz"),
        ]
    assert [a.status_code for a in answers] == [200, 200, 200, 401, 404, 200]
    for answer in answers:
        _assert_security_headers(answer)
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY  # no inline script may run


def test_401_and_404_bodies_carry_the_chinese_message(indexed_server: Served) -> None:
    with indexed_server.client() as client:
        refused = client.get("/api/status", headers={"Authorization": "Bearer wrong"})
        missing = client.get("/api/no-such-route")
        wrong_method = client.delete("/api/status")
        no_photo = client.get(f"/api/photos/{'0' * 64}")
    for answer in (refused, missing, wrong_method, no_photo):
        body = answer.json()
        assert body["detail"] and body["message"], answer.status_code
        assert any("\u4e00" <= char <= "\u9fff" for char in body["message"])


def test_without_a_token_another_website_cannot_show_or_probe_photos(
    start_server: ServerFactory, make_settings: SettingsFactory, small_library: SmallLibrary
) -> None:
    """`<img src=http://127.0.0.1:8000/api/photos/ID/thumbnail>` on a page elsewhere sends no
    Origin, but the browser says where it comes from: such a request is refused."""
    served = start_server(
        make_settings(library=small_library.root), descriptions=small_library.descriptions
    )
    assert served.token is None
    served.app.index()
    photo_id = next(iter(served.app.catalog.photo_ids()))
    paths = [
        f"/api/photos/{photo_id}/thumbnail",
        f"/api/photos/{photo_id}/file",
        f"/api/photos/{photo_id}/similar",
        f"/api/photos/{photo_id}",
    ]
    other_sites = [
        {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Dest": "image"},
        {"Sec-Fetch-Site": "same-site"},  # another port of this machine's name
        {"Referer": "https://evil.example/page.html"},  # a browser without Sec-Fetch-*
    ]
    with served.client() as client:
        for path in paths:
            for headers in other_sites:
                refused = client.get(path, headers=headers)
                assert refused.status_code == 401, (path, headers)
                assert "other websites" in refused.json()["detail"]
                assert refused.json()["message"]
            own_page = {"Sec-Fetch-Site": "same-origin", "Referer": f"{served.url}/"}
            assert client.get(path, headers=own_page).status_code == 200, path
            assert client.get(path).status_code == 200, path  # curl, the CLI, the bot
            typed = {"Sec-Fetch-Site": "none"}  # an address typed into the browser
            assert client.get(path, headers=typed).status_code == 200, path


def _connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=30)


def _read_all(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    return received


@pytest.fixture
def impatient_server(start_server: ServerFactory, make_settings: SettingsFactory) -> Served:
    settings = make_settings(library=None, server={"header_timeout_s": 1, "body_timeout_s": 1})
    return start_server(settings)


def test_a_client_that_trickles_its_headers_is_let_go_with_408(impatient_server: Served) -> None:
    with _connect(impatient_server.url) as sock:
        sock.sendall(b"GET /api/status HTTP/1.1\r\n")
        started = time.monotonic()
        try:
            for _ in range(30):  # one header line a quarter second: never done
                sock.sendall(b"X-Slow: 1\r\n")
                time.sleep(0.25)
        except OSError:
            pass  # the server closed the connection
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert time.monotonic() - started < 7.5  # not held for the whole trickle
    assert "请求发得太慢".encode() in answer


def test_a_client_that_trickles_its_body_is_let_go_with_408(impatient_server: Served) -> None:
    with _connect(impatient_server.url) as sock:
        sock.sendall(
            b"POST /api/recommend HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 4000\r\n\r\n{"
        )
        try:
            for _ in range(30):
                sock.sendall(b" ")
                time.sleep(0.25)
        except OSError:
            pass
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
    assert b"too slowly" in answer


def test_an_idle_connection_does_not_end_a_request_that_came_in_time(
    impatient_server: Served,
) -> None:
    """The header deadline starts again after each answer: keep-alive requests go on."""
    with httpx.Client(base_url=impatient_server.url) as client:
        for _ in range(3):
            assert client.get("/api/status").status_code == 200
            time.sleep(0.6)


# --- the page under its policy, in a real browser ---------------------------------------------
_WATCH_POLICY = """
window.__violations = [];
document.addEventListener('securitypolicyviolation',
    e => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));
"""


@pytest.mark.e2e
@pytest.mark.parametrize("token", [TOKEN, None], ids=["token", "no-token"])
def test_the_page_works_under_its_content_security_policy(
    browser: Browser,
    start_server: ServerFactory,
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    token: str | None,
) -> None:
    """Search, thumbnails (blob: URLs), search by image with its preview: nothing the page does
    is blocked, and the policy is really in force (an injected inline script is). Without a
    token the page's own requests are same-origin: the cross-site refusal lets them by."""
    settings = make_settings(library=small_library.root, admin_token=token)
    served = start_server(settings, descriptions=small_library.descriptions)
    served.app.index()
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.add_init_script(_WATCH_POLICY)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(served.url + "/")
    if token is not None:
        enter_token(page, token)
    found = search(page, small_library.photos[0].captions[4])
    widths = loaded_thumbnails(page, "#results .card img")
    with page.expect_response("**/api/search/similar") as answer:
        blue = make_png(120, 90, (40, 110, 220))
        page.set_input_files("#similar-file", files=[file_payload("蓝.png", "image/png", blue)])
    assert answer.value.status == 200
    assert loaded_thumbnails(page, "#query-photo-img") == [120]
    seen_before = page.evaluate("window.__violations")
    page.evaluate(
        "() => { const s = document.createElement('script');"
        " s.textContent = 'window.__inline = 1'; document.body.append(s); }"
    )
    page.wait_for_function("window.__violations.length > 0")
    inline_ran = page.evaluate("window.__inline === 1")
    page.close()
    assert found["results"] and widths and all(width > 0 for width in widths)
    assert seen_before == [] and not errors, (seen_before, errors)
    assert not inline_ran  # the policy is in force: an injected inline script does not run
