"""Who may call `/api`: refused before any body is read, and, on a server without a token,
only this machine's own clients (not another site's page in the user's browser)."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

from server.app import MAX_JSON_BODY_BYTES
from server.auth import BACKOFF_AFTER, BACKOFF_S
from tests.server.conftest import Served, ServerFactory
from tests.support.core_fixtures import SettingsFactory


def _raw_response_head(url: str, request: bytes) -> str:
    """Send `request` as it is and read the status line and headers of the answer."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(4096)
            if not chunk:
                break
            received += chunk
    return received.decode("latin-1")


def test_a_request_without_the_token_is_refused_before_its_body_is_read(
    indexed_server: Served,
) -> None:
    # Declares 100 MB and sends one byte: a server that read the body first would wait forever.
    head = _raw_response_head(
        indexed_server.url,
        b"POST /api/recommend HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n{",
    )
    assert head.startswith("HTTP/1.1 401"), head
    assert "www-authenticate: Bearer" in head


def test_a_json_body_over_the_limit_is_413(indexed_server: Served) -> None:
    with indexed_server.client() as client:
        response = client.post("/api/recommend", json={"text": "海" * MAX_JSON_BODY_BYTES})
    assert response.status_code == 413
    assert "larger than" in response.json()["detail"]


def test_without_a_token_only_this_machine_may_call_the_api(
    start_server: ServerFactory, make_settings: SettingsFactory
) -> None:
    served = start_server(make_settings(library=None))
    assert served.token is None
    own_page = {"Origin": served.url}
    other_site = {"Origin": "https://evil.example"}
    rebound = {"Host": "evil.example"}  # DNS rebinding: another name that points here
    with served.client() as client:
        assert client.get("/api/status").status_code == 200
        assert client.get("/api/status", headers=own_page).status_code == 200
        for headers in (other_site, rebound, {"Origin": "null"}):
            refused = client.post("/api/index/jobs", json={"mode": "incremental"}, headers=headers)
            assert refused.status_code == 401, headers
            assert "this machine's own clients" in refused.json()["detail"]
    assert served.ctx.jobs.recent() == []


def test_only_exactly_bearer_and_one_space_is_accepted(indexed_server: Served) -> None:
    token = indexed_server.token
    assert token is not None
    refused = [
        f"bearer {token}",
        f"BEARER {token}",
        f"Bearer  {token}",
        # (white space around a header value is HTTP's own and stripped before us)
        f"Bearer\t{token}",
        f"Bearer {token} extra",
        f"Basic {token}",
        token,
    ]
    with indexed_server.client(token=None) as client:
        assert client.get("/api/status", headers={"Authorization": f"Bearer {token}"}).is_success
        for header in refused:
            response = client.get("/api/status", headers={"Authorization": header})
            assert response.status_code == 401, header


def test_repeated_wrong_tokens_from_one_address_slow_down(indexed_server: Served) -> None:
    """After BACKOFF_AFTER wrong tokens each further one waits BACKOFF_S; the right token
    never waits. The bound is the back-off itself, not a measured speed."""
    with indexed_server.client(token="wrong-token") as wrong:
        for _ in range(BACKOFF_AFTER):
            assert wrong.get("/api/status").status_code == 401
        started = time.monotonic()
        assert wrong.get("/api/status").status_code == 401
        assert time.monotonic() - started >= BACKOFF_S
    with indexed_server.client() as right:
        assert right.get("/api/status").status_code == 200


def test_a_method_a_path_lacks_is_405_with_allow(indexed_server: Served) -> None:
    with indexed_server.client() as client:
        get_on_post = client.get("/api/recommend")
        options = client.options("/api/status")
        unknown = client.get("/api/no-such-thing")
    assert get_on_post.status_code == 405 and get_on_post.headers["allow"] == "POST"
    assert options.status_code == 405 and "GET" in options.headers["allow"]
    assert unknown.status_code == 404 and "detail" in unknown.json()


def test_no_docs_from_a_cdn_and_the_schema_documents_the_error_bodies(
    indexed_server: Served,
) -> None:
    with indexed_server.client(token=None) as client:
        assert client.get("/docs").status_code == 404
        schema = client.get("/openapi.json").json()
    recommend = schema["paths"]["/api/recommend"]["post"]["responses"]
    for code in ("400", "401", "405", "413", "422"):
        ref = recommend[code]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/ErrorOut"), code
    assert "HTTPValidationError" not in schema["components"]["schemas"]


def test_error_details_carry_no_python_reprs(indexed_server: Served) -> None:
    with indexed_server.client() as client:
        response = client.post(
            "/api/search/similar", data={"file": "not a file"}, files={"other": ("x", b"1")}
        )
    assert response.status_code == 422
    assert " at 0x" not in response.text and "<class" not in response.text
