"""A request about one photo costs the same in a library of thousands: point queries on its id,
counted as SQLite work in a real catalog, and the server asking the core only through its port."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from index.library.catalog import Catalog
from index.models import PhotoFile
from index.service import PeiTu
from server.app import create_app
from tests.server.conftest import Served, ServerFactory, serving, wait_for
from tests.support.core_fixtures import SettingsFactory

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PHOTOS = 3000
# What one photo's page may cost, in SQLite steps: three lookups by id take ~80. Reading one
# table of PHOTOS rows takes several steps a row (see the first assertion of each test).
MOST_STEPS = 600


def _photo_id(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def _fill(catalog: Catalog, count: int) -> None:
    """A catalog as a library of `count` described, embedded photos leaves it (no vectors)."""
    rel = [f"2026/{i // 100:02d}/IMG_{i:05d}.jpg" for i in range(count)]
    catalog.replace_files(
        PhotoFile(_photo_id(i), Path(rel[i]), rel[i], 1000 + i, 1.0, 640, 480) for i in range(count)
    )
    for i in range(count):
        catalog.save_description(_photo_id(i), "sidecar:captions.jsonl", f"第 {i} 张：海边的日落")
    catalog.mark_embedded(((_photo_id(i), f"第 {i} 张", rel[i]) for i in range(count)), "m3e")


def _steps(catalog: Catalog, request: Callable[[], object]) -> int:
    with catalog.work_counted() as work:
        request()
    return work.steps


@pytest.fixture
def big_server(start_server: ServerFactory, make_settings: SettingsFactory) -> Served:
    served = start_server(make_settings(library=None, admin_token=None))
    _fill(served.app.catalog, PHOTOS)
    return served


def test_a_photo_s_page_reads_a_bounded_number_of_rows(big_server: Served) -> None:
    catalog, wanted = big_server.app.catalog, _photo_id(PHOTOS // 2)
    with big_server.client() as client:
        big_server.wait_ready(client)
        assert _steps(catalog, catalog.photo_ids) > PHOTOS  # the counter sees a scan
        response = None

        def get_photo() -> None:
            nonlocal response
            response = client.get(f"/api/photos/{wanted}")

        steps = _steps(catalog, get_photo)
    assert response is not None and response.status_code == 200
    body = response.json()
    assert (body["description"], body["describer_tier"], body["indexed"]) == (
        f"第 {PHOTOS // 2} 张：海边的日落",
        "imported",
        True,
    )
    assert body["path"] == f"2026/15/IMG_{PHOTOS // 2:05d}.jpg"
    assert steps < MOST_STEPS, f"GET /api/photos/{{id}} ran {steps} SQLite steps"


def test_probes_and_a_repeated_status_poll_do_not_read_the_library(big_server: Served) -> None:
    catalog = big_server.app.catalog
    with big_server.client() as client:
        big_server.wait_ready(client)
        first = client.get("/api/status").json()  # counts the library once
        costs = {
            path: _steps(catalog, lambda path=path: client.get(path).raise_for_status())
            for path in ("/readyz", "/metrics", "/api/status")
        }
        catalog.save_description(_photo_id(1), "offline:v1", "海边")  # the catalog changed
        changed = _steps(catalog, lambda: client.get("/api/status").raise_for_status())
        again = client.get("/api/status").json()
    assert (first["files"], first["tiers"]) == (PHOTOS, {"imported": PHOTOS})
    assert again["tiers"] == {"imported": PHOTOS}  # the sidecar still wins over offline
    assert all(steps < MOST_STEPS for steps in costs.values()), costs
    assert changed > PHOTOS  # counted afresh after a change: the cache is not stale


def test_photo_details_are_point_queries(big_server: Served) -> None:
    app, catalog = big_server.app, big_server.app.catalog
    assert _steps(catalog, catalog.embedded) > PHOTOS
    assert _steps(catalog, lambda: app.photo_details(_photo_id(7))) < MOST_STEPS
    assert _steps(catalog, lambda: app.photo_details("0" * 64)) < MOST_STEPS  # not there
    assert app.photo_details("0" * 64) is None


class RecordingCore:
    """The real core behind the server's port, noting each method the server calls."""

    def __init__(self, core: PeiTu) -> None:
        self._core = core
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._core, name)

        def recorded(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return method(*args, **kwargs)

        return recorded


def test_the_server_asks_the_core_through_its_port_only(
    start_server: ServerFactory, make_settings: SettingsFactory
) -> None:
    settings = make_settings(library=None, admin_token=None)
    real = start_server(settings).app
    _fill(real.catalog, 50)
    core = RecordingCore(real)
    with (
        serving(create_app(core, settings)) as url,  # type: ignore[arg-type]
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        wait_for(lambda: client.get("/readyz").status_code == 200, "readyz")
        core.calls.clear()
        found = client.get(f"/api/photos/{_photo_id(3)}")
        missing = client.get(f"/api/photos/{'0' * 64}")
        thumbnail = client.get(f"/api/photos/{_photo_id(3)}/thumbnail")  # no file on disk
    assert (found.status_code, missing.status_code, thumbnail.status_code) == (200, 404, 404)
    assert core.calls == ["photo_details", "photo_details", "photo_details", "open_photo"]


def test_an_upload_of_a_deleted_photo_lets_it_back_in(
    start_server: ServerFactory, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    library = tmp_path / "library"
    library.mkdir()
    app = start_server(make_settings(library=library, admin_token=None)).app
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 120, 200)).save(buffer, "JPEG")
    data = buffer.getvalue()
    photo_id = hashlib.sha256(data).hexdigest()
    first = app.accept_upload(data, "sea.jpg")
    app.catalog.exclude_photo(photo_id)  # the user deleted it from the index
    second = app.accept_upload(data, "sea.jpg")
    assert (first.photo_id, first.rel_path, first.readmitted) == (
        photo_id,
        "uploads/sea.jpg",
        False,
    )
    assert (second.rel_path, second.readmitted) == ("uploads/sea-1.jpg", True)
    assert photo_id not in app.catalog.excluded_ids()
    assert (library / "uploads" / "sea.jpg").read_bytes() == data
