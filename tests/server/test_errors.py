"""Core errors become HTTP status codes with a `{"detail": ...}` body, never a traceback."""

from __future__ import annotations

import io
from collections.abc import Sequence

import pytest
from PIL import Image

from index.errors import (
    DescribeFailed,
    IndexBusy,
    IndexMismatch,
    InvalidQuery,
    LibraryNotFound,
    ModelUnavailable,
    PeiTuError,
    PhotoUnreadable,
)
from index.ports import Vectors
from index.search.embed import SentenceTransformerEmbedder
from index.wiring import build_app
from server.app import create_app
from server.errors import status_for
from tests.server.conftest import Served, ServerFactory, metric, serving
from tests.support.core_fixtures import SettingsFactory, SmallLibrary


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidQuery("empty"), 400),
        (IndexBusy("abc"), 409),
        (LibraryNotFound("gone"), 409),
        (IndexMismatch("other model"), 409),
        (ModelUnavailable("down"), 503),
        (PhotoUnreadable("x", "corrupt"), 415),
        (PhotoUnreadable("x", "too_large"), 413),
        (PhotoUnreadable("x", "too_many_pixels"), 413),
        (PhotoUnreadable("x", "not_found"), 404),
        (DescribeFailed("no"), 502),
        (PeiTuError("anything else"), 500),
    ],
)
def test_status_for_core_errors(error: PeiTuError, status: int) -> None:
    assert status_for(error) == status


def _served_without_visual_index(
    start_server: ServerFactory, make_settings: SettingsFactory, small_library: SmallLibrary
) -> Served:
    """With the visual index off, a photo is described to be searched for: the sidecar
    describer cannot describe a new image."""
    settings = make_settings(library=small_library.root, visual={"backend": "off"})
    served = start_server(settings, descriptions=small_library.descriptions)
    served.app.index()
    return served


def test_similar_search_by_description_with_a_describer_that_cannot_is_502(
    start_server: ServerFactory, make_settings: SettingsFactory, small_library: SmallLibrary
) -> None:
    served = _served_without_visual_index(start_server, make_settings, small_library)
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(buffer, format="JPEG")  # not in the library
    with served.client() as client:
        response = client.post("/api/search/similar", files={"file": ("q.jpg", buffer.getvalue())})
    assert response.status_code == 502
    assert "cannot describe a new image" in response.json()["detail"]


def test_similar_search_by_description_for_a_library_photo_uses_its_stored_description(
    start_server: ServerFactory, make_settings: SettingsFactory, small_library: SmallLibrary
) -> None:
    served = _served_without_visual_index(start_server, make_settings, small_library)
    data = (small_library.root / small_library.photos[0].rel_path).read_bytes()
    with served.client() as client:
        response = client.post("/api/search/similar", files={"file": ("q.jpg", data)})
    assert response.status_code == 200 and response.json()["results"]


class _Explosive:
    """An embedder with a bug that shows on one text."""

    def __init__(self, inner: SentenceTransformerEmbedder) -> None:
        self._inner = inner
        self.model_name = inner.model_name
        self.dimension = inner.dimension

    def embed(self, texts: Sequence[str]) -> Vectors:
        if "boom" in texts:
            raise RuntimeError("secret internals at /etc/shadow")
        return self._inner.embed(texts)


def test_an_unexpected_error_is_a_json_500_without_traceback(
    make_settings: SettingsFactory, embedder: SentenceTransformerEmbedder
) -> None:
    settings = make_settings()
    app = build_app(settings, embedder=_Explosive(embedder))
    try:
        api = create_app(app, settings)
        with serving(api) as url:
            served = Served(url, api, app, settings, None)
            with served.client() as client:
                served.wait_ready(client)
                response = client.post("/api/recommend", json={"text": "boom"})
                metrics = client.get("/metrics").text
    finally:
        app.close()
    assert response.status_code == 500
    assert response.json() == {
        "detail": "internal server error; see the server log",
        "message": "服务器出错了，请稍后再试；仍不行请查看服务器日志。",
    }
    assert "Traceback" not in response.text and "shadow" not in response.text
    route = {"method": "POST", "route": "/api/recommend", "status": "500"}
    assert metric(metrics, "peitu_http_requests_total", **route) == 1


class _Renamed:
    """The same model under another name: a user who switched embedding models."""

    def __init__(self, inner: SentenceTransformerEmbedder) -> None:
        self._inner = inner

    @property
    def model_name(self) -> str:
        return "m3e-other"

    @property
    def dimension(self) -> int:
        return self._inner.dimension

    def embed(self, texts: Sequence[str]) -> Vectors:
        return self._inner.embed(texts)


def test_an_index_built_with_another_model_is_409_until_rebuilt(
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    embedder: SentenceTransformerEmbedder,
) -> None:
    settings = make_settings(library=small_library.root)
    first = build_app(settings, descriptions=small_library.descriptions, embedder=embedder)
    first.index()
    first.close()
    app = build_app(settings, descriptions=small_library.descriptions, embedder=_Renamed(embedder))
    try:
        api = create_app(app, settings)
        with serving(api) as url:
            served = Served(url, api, app, settings, None)
            with served.client() as client:
                served.wait_ready(client)
                refused = client.post("/api/recommend", json={"text": "海边"})
                status = client.get("/api/status").json()
                incremental = served.wait_job(
                    client, client.post("/api/index/jobs").json()["job_id"]
                )
                rebuild = client.post("/api/index/jobs", json={"mode": "rebuild"}).json()
                rebuilt = served.wait_job(client, rebuild["job_id"])
                after = client.post("/api/recommend", json={"text": "海边"})
    finally:
        app.close()
    assert refused.status_code == 409 and "peitu index --rebuild" in refused.json()["detail"]
    assert status["problem"] is not None and status["photos"] == 0
    assert incremental["state"] == "failed" and "peitu index --rebuild" in incremental["error"]
    assert rebuilt["state"] == "succeeded" and rebuilt["counts"]["described"] == 0
    assert after.status_code == 200 and after.json()["results"]
