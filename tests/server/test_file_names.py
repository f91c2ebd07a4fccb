"""The API over a library whose file names are not all valid UTF-8 (GBK, Latin-1)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tests.server.conftest import ServerFactory, vision_settings
from tests.support.core_fixtures import SettingsFactory
from tests.support.odd_names import LATIN1_NAME, SHOWN, make_odd_names_library
from tests.support.openai_server import FakeOpenAIServer


def test_the_api_indexes_serves_and_shows_names_that_are_not_utf8(
    tmp_path: Path,
    start_server: ServerFactory,
    make_settings: SettingsFactory,
    openai_server: FakeOpenAIServer,
) -> None:
    library = make_odd_names_library(tmp_path / "odd")
    settings = make_settings(
        library=library, vision=vision_settings(openai_server), similarity_threshold=0.0
    )
    served = start_server(settings)
    latin1 = (Path(os.fsdecode(os.fsencode(library) + b"/" + LATIN1_NAME))).read_bytes()
    with served.client() as client:
        job = served.wait_job(client, client.post("/api/index/jobs").json()["job_id"])
        found = client.post("/api/recommend", json={"text": "红灯笼与节日装饰，春节"}).json()
        red = found["results"][0]
        photo = client.get(f"/api/photos/{red['photo_id']}").json()
        original = client.get(f"/api/photos/{red['photo_id']}/file")
        thumbnail = client.get(f"/api/photos/{red['photo_id']}/thumbnail")
    assert job["state"] == "succeeded", job
    assert (job["counts"]["embedded"], job["counts"]["failed"], job["errors"]) == (3, 0, [])
    assert red["path"] == SHOWN["red"] and photo["path"] == SHOWN["red"]
    assert original.status_code == 200 and original.content == latin1
    assert red["photo_id"] == hashlib.sha256(latin1).hexdigest()
    assert thumbnail.status_code == 200 and thumbnail.content.startswith(b"\xff\xd8")
