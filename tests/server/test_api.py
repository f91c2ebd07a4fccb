"""Recommend, auth, photos, health and metrics over real HTTP against an indexed library."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from server.auth import is_loopback, token_matches
from tests.server.conftest import Served, ServerFactory, metric
from tests.support.chroma_server import chroma_server
from tests.support.core_fixtures import SettingsFactory

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _without_timings(payload: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in payload.items() if key != "timings_ms"}


def test_recommend_returns_the_cli_json(indexed_server: Served) -> None:
    photo = indexed_server.library.photos[0] if indexed_server.library else None
    assert photo is not None
    with indexed_server.client() as client:
        request = {"text": photo.captions[4], "top_k": 3, "closest": True}
        response = client.post("/api/recommend", json=request)
    assert response.status_code == 200
    body = response.json()
    # what --json prints (the closest three: a plain answer holds only the photos that fit)
    expected = indexed_server.app.recommend(photo.captions[4], 3, closest=True).to_dict()
    assert _without_timings(body) == _without_timings(expected)
    assert [r["rank"] for r in body["results"]] == [1, 2, 3]
    assert set(body["timings_ms"]) == {"embed", "search", "rerank"}


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_empty_text_is_a_400_with_a_clear_message(indexed_server: Served, text: str) -> None:
    with indexed_server.client() as client:
        response = client.post("/api/recommend", json={"text": text})
    assert response.status_code == 400
    assert "text is empty" in response.json()["detail"]


def test_bad_request_bodies_get_one_readable_line(indexed_server: Served) -> None:
    with indexed_server.client() as client:
        missing = client.post("/api/recommend", json={"top_k": 3})
        bad_k = client.post("/api/recommend", json={"text": "海边", "top_k": 0})
        not_json = client.post(
            "/api/recommend", content=b"{oops", headers={"Content-Type": "application/json"}
        )
    assert missing.status_code == bad_k.status_code == not_json.status_code == 422
    assert missing.json()["detail"] == "body.text: Field required"
    assert (
        "top_k" in bad_k.json()["detail"] and "greater than or equal to 1" in bad_k.json()["detail"]
    )
    assert isinstance(not_json.json()["detail"], str)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing bearer token"),
        ({"Authorization": "Bearer not-the-token"}, "wrong admin token"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing bearer token"),
        ({"Authorization": "Bearer"}, "missing bearer token"),
    ],
)
def test_api_needs_the_admin_token(
    indexed_server: Served, headers: dict[str, str], reason: str
) -> None:
    with indexed_server.client(token=None, headers=headers) as client:
        for method, path in [("POST", "/api/recommend"), ("GET", "/api/index/jobs"),
                             ("GET", "/api/status"), ("POST", "/api/index/jobs")]:  # fmt: skip
            response = client.request(method, path, json={"text": "海边"})
            assert response.status_code == 401, path
            assert reason in response.json()["detail"]
            assert response.headers["www-authenticate"] == "Bearer"


def test_health_and_readiness_need_no_token(indexed_server: Served) -> None:
    with indexed_server.client(token=None) as client:
        health = client.get("/healthz")
        ready = client.get("/readyz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert ready.status_code == 200
    assert ready.json() == {
        "ready": True, "embedding_model": "m3e-small", "photos": 30, "problem": None,
    }  # fmt: skip


def test_readyz_is_503_while_the_model_is_not_loaded(indexed_server: Served) -> None:
    readiness = indexed_server.ctx.readiness
    readiness.set(False, "the embedding model is still loading")
    try:
        with indexed_server.client(token=None) as client:
            response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json() == {
            "detail": "not ready: the embedding model is still loading",
            "message": "服务暂时不可用，请稍后再试。",
        }
    finally:
        readiness.set(True, None)


def test_status(indexed_server: Served) -> None:
    with indexed_server.client() as client:
        status = client.get("/api/status").json()
    assert (status["photos"], status["files"], status["indexing"]) == (30, 30, False)
    assert status["last_index_at"] is not None and status["problem"] is None
    assert status["next_scheduled_index_at"] is None  # scheduling is off by default


def test_photo_metadata_thumbnail_and_file(indexed_server: Served) -> None:
    assert indexed_server.library is not None
    photo = indexed_server.library.photos[1]
    photo_id = _photo_id_of(indexed_server, photo.rel_path)
    with indexed_server.client() as client:
        meta = client.get(f"/api/photos/{photo_id}").json()
        thumb = client.get(f"/api/photos/{photo_id}/thumbnail", params={"size": 64})
        again = client.get(
            f"/api/photos/{photo_id}/thumbnail",
            params={"size": 64},
            headers={"If-None-Match": thumb.headers["etag"]},
        )
        original = client.get(f"/api/photos/{photo_id}/file")
    assert meta["path"] == photo.rel_path and meta["indexed"] is True
    assert meta["description"] == "".join(photo.captions[:4])
    assert meta["describer"].startswith("sidecar:")
    assert thumb.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(thumb.content))
    assert image.format == "JPEG" and max(image.size) == 64
    assert again.status_code == 304
    assert original.headers["content-type"] == "image/jpeg"
    assert original.content == (indexed_server.library.root / photo.rel_path).read_bytes()


def test_unknown_and_malformed_photo_ids(indexed_server: Served) -> None:
    unknown = "0" * 64
    with indexed_server.client() as client:
        for suffix in ("", "/thumbnail", "/file"):
            response = client.get(f"/api/photos/{unknown}{suffix}")
            assert response.status_code == 404
            assert unknown in response.json()["detail"]
        assert client.get("/api/photos/..%2F..%2Fetc%2Fpasswd/file").status_code in (404, 422)
        assert client.get("/api/photos/not-a-sha/thumbnail").status_code == 422
        assert client.get("/api/nothing-here").status_code == 404


def test_metrics_count_requests_and_photos(indexed_server: Served) -> None:
    with indexed_server.client() as client:
        before = client.get("/metrics").text
        client.post("/api/recommend", json={"text": "在海边玩耍的孩子"})
        client.post("/api/recommend", json={"text": ""})
        client.get(f"/api/photos/{'0' * 64}")
        after = client.get("/metrics").text
    route = {"method": "POST", "route": "/api/recommend"}
    for status in ("200", "400"):
        was = metric(before, "peitu_http_requests_total", status=status, **route) or 0
        assert metric(after, "peitu_http_requests_total", status=status, **route) == was + 1
    photo = {"method": "GET", "route": "/api/photos/{photo_id}", "status": "404"}
    was = metric(before, "peitu_http_requests_total", **photo) or 0
    assert metric(after, "peitu_http_requests_total", **photo) == was + 1  # by template, not id
    assert (metric(after, "peitu_http_request_duration_seconds_count", **route) or 0) >= 2
    assert metric(after, "peitu_photos_indexed") == 30
    assert metric(after, "peitu_index_job_running") == 0


def test_openapi_describes_the_responses(indexed_server: Served) -> None:
    with indexed_server.client(token=None) as client:
        schema = client.get("/openapi.json").json()
    recommend = schema["paths"]["/api/recommend"]["post"]
    ok = recommend["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["$ref"].endswith("/RecommendOut")
    assert set(recommend["responses"]) >= {"200", "400", "409", "422", "503"}
    jobs = schema["paths"]["/api/index/jobs"]["post"]["responses"]
    assert jobs["409"]["content"]["application/json"]["schema"]["$ref"].endswith("/BusyOut")
    assert "HTTPBearer" in schema["components"]["securitySchemes"]


def test_web_page_is_served_without_a_token(indexed_server: Served) -> None:
    with indexed_server.client(token=None) as client:
        page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]


def _photo_id_of(served: Served, rel_path: str) -> str:
    return next(pid for rel, pid in served.app.catalog.files().items() if rel == rel_path)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.20", False),
        ("nas.local", False),
        ("", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_token_comparison() -> None:
    assert token_matches("s3cret-令牌", "s3cret-令牌")
    assert not token_matches("s3cret", "s3cret-令牌")
    assert not token_matches("", "x")


def test_readyz_is_503_when_the_chroma_server_goes_away(
    start_server: ServerFactory, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    with chroma_server(tmp_path / "chroma-server") as url:
        served = start_server(make_settings(library=None, chroma={"url": url}))
        with served.client() as client:
            served.wait_ready(client)
    with served.client() as client:  # the Chroma server has stopped
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["detail"].startswith("not ready: the vector store is unreachable")
