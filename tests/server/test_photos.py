"""Uploads (checked by content, size and name), photo deletion that sticks, over real HTTP."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from index.library.lock import IndexLock
from server.uploads import UPLOADS_FOLDER, safe_file_name
from tests.server.conftest import Served, ServerFactory, vision_settings, wait_for
from tests.support.core_fixtures import EVAL_DIR, SettingsFactory, SmallLibrary, read_eval_captions
from tests.support.openai_server import FakeOpenAIServer


@pytest.fixture(scope="module")
def eval_photos() -> list[bytes]:
    """Three real JPEGs from the evaluation set."""
    return [(EVAL_DIR / "images" / p.rel_path).read_bytes() for p in read_eval_captions(3)]


@pytest.fixture
def empty_library(tmp_path: Path) -> Path:
    library = tmp_path / "library"
    library.mkdir()
    return library


@pytest.fixture
def vision_server(
    start_server: ServerFactory,
    make_settings: SettingsFactory,
    empty_library: Path,
    openai_server: FakeOpenAIServer,
) -> Served:
    """A server over an empty library whose photos are described by the fake vision model."""
    settings = make_settings(
        library=empty_library,
        vision=vision_settings(openai_server),
        similarity_threshold=0.0,
        server={"upload_max_mb": 0.5},
    )
    return start_server(settings)


def upload(
    client: httpx.Client, name: str, data: bytes, mime: str = "image/jpeg"
) -> httpx.Response:
    return client.post("/api/photos", files={"file": (name, data, mime)})


def jpeg_of(colour: tuple[int, int, int], size: tuple[int, int] = (96, 64)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "JPEG")
    return out.getvalue()


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_an_uploaded_photo_is_saved_described_and_indexed(
    vision_server: Served, eval_photos: list[bytes], openai_server: FakeOpenAIServer
) -> None:
    with vision_server.client() as client:
        created = upload(client, "海边 日落.JPG", eval_photos[0])
        body = created.json()
        job = vision_server.wait_job(client, body["job_id"])
        photo = client.get(f"/api/photos/{body['photo_id']}").json()
        found = client.post("/api/recommend", json={"text": photo["description"]}).json()
        again = upload(client, "海边 日落.JPG", eval_photos[0]).json()
        vision_server.wait_job(client, again["job_id"])
    assert created.status_code == 201 and body["indexed"] is False
    assert again["indexed"] is True and again["path"] == f"{UPLOADS_FOLDER}/海边_日落-1.jpg"
    assert body["photo_id"] == hashlib.sha256(eval_photos[0]).hexdigest()
    assert body["path"] == f"{UPLOADS_FOLDER}/海边_日落.jpg" and body["status"] == "started"
    assert (vision_server.app.library or Path()).joinpath(body["path"]).read_bytes() == eval_photos[
        0
    ]
    assert job["state"] == "succeeded" and job["trigger"] == "upload"
    assert {k: job["counts"][k] for k in ("new", "described", "embedded", "failed")} == {
        "new": 1, "described": 1, "embedded": 1, "failed": 0,
    }  # fmt: skip
    assert photo["indexed"] is True and photo["describer"] == "fake-vl@v1"
    assert photo["description"].startswith("主体：")
    assert found["results"][0]["photo_id"] == body["photo_id"]
    assert openai_server.calls["vision"] == 1


def test_similar_search_finds_other_photos_not_the_same_one(
    vision_server: Served, eval_photos: list[bytes]
) -> None:
    with vision_server.client() as client:
        ids = []
        for number, data in enumerate(eval_photos):
            created = upload(client, f"p{number}.jpg", data).json()
            vision_server.wait_job(client, created["job_id"])
            ids.append(created["photo_id"])
        similar = client.post(
            "/api/search/similar",
            files={"file": ("query.jpg", eval_photos[0], "image/jpeg")},
            params={"top_k": 5},
        )
        not_image = client.post("/api/search/similar", files={"file": ("q.jpg", b"hello")})
    assert similar.status_code == 200
    found = [r["photo_id"] for r in similar.json()["results"]]
    assert ids[0] not in found and set(found) == set(ids[1:])
    assert not_image.status_code == 415


@pytest.mark.parametrize(
    ("name", "data", "mime"),
    [
        ("notes.jpg", "这不是照片".encode() * 100, "image/jpeg"),
        ("page.png", b"<html><script>alert(1)</script></html>", "image/png"),
        ("cut.jpg", None, "image/jpeg"),  # a real JPEG cut in half
        ("empty.jpg", b"", "image/jpeg"),
    ],
)
def test_a_non_image_upload_is_refused_and_not_saved(
    vision_server: Served,
    eval_photos: list[bytes],
    name: str,
    data: bytes | None,
    mime: str,
) -> None:
    payload = data if data is not None else eval_photos[1][: len(eval_photos[1]) // 2]
    with vision_server.client() as client:
        response = upload(client, name, payload, mime)
        jobs = client.get("/api/index/jobs").json()["jobs"]
    assert response.status_code == 415
    assert response.json()["detail"].startswith("not a readable image (")
    assert files_in((vision_server.app.library or Path()) / UPLOADS_FOLDER) == []
    assert jobs == []


def _multipart(name: str, data: bytes, boundary: str) -> Iterator[bytes]:
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    for start in range(0, len(data), 64 * 1024):
        yield data[start : start + 64 * 1024]
    yield f"\r\n--{boundary}--\r\n".encode()


def test_an_oversized_upload_is_413_however_it_is_sent(vision_server: Served) -> None:
    limit = int(0.5 * 1024 * 1024)
    just_over = jpeg_of((10, 120, 200)) + b"\0" * limit  # a valid JPEG with junk after it
    with vision_server.client() as client:
        slightly = upload(client, "big.jpg", just_over)  # caught when the file is read
        declared = upload(client, "big.jpg", b"\xff" * (4 * limit))  # by Content-Length
        chunked = client.post(  # no Content-Length at all: counted as it streams in
            "/api/photos",
            content=_multipart("big.jpg", b"\xff" * (4 * limit), "b0undary"),
            headers={"Content-Type": "multipart/form-data; boundary=b0undary"},
        )
        similar = client.post("/api/search/similar", files={"file": ("q.jpg", just_over)})
        metrics = client.get("/metrics").text
    for response in (slightly, declared, chunked, similar):
        assert response.status_code == 413, response.text
        assert response.json() == {
            "detail": "the upload is larger than the limit of 0.5 MB",
            "message": "文件太大，超过了服务器允许的大小。",
        }
    assert "chunked" not in declared.request.headers.get("transfer-encoding", "")
    assert chunked.request.headers["transfer-encoding"] == "chunked"
    assert files_in((vision_server.app.library or Path()) / UPLOADS_FOLDER) == []
    assert 'route="/api/photos",status="413"' in metrics


@pytest.mark.parametrize(
    ("sent_name", "saved_name"),
    [
        ("../x.jpg", "x.jpg"),
        ("../../../../etc/cron.d/evil", "evil.jpg"),
        ("/absolute/path/y.jpeg", "y.jpeg"),
        ("..\\..\\windows\\z.jpg", "z.jpg"),
        (".hidden.jpg", "hidden.jpg"),
        ("..", "photo.jpg"),
        ("photo.png", "photo.jpg"),  # the content is JPEG: the scanner reads it by its extension
        ("a\u202ereversed\u200b.jpg", "a_reversed.jpg"),
    ],
)
def test_upload_names_cannot_escape_or_hide(
    vision_server: Served, sent_name: str, saved_name: str
) -> None:
    uploads = (vision_server.app.library or Path()) / UPLOADS_FOLDER
    with vision_server.client() as client:
        response = upload(client, sent_name, jpeg_of((200, 30, 30)))
        vision_server.wait_job(client, response.json()["job_id"])
    assert response.status_code == 201, response.text
    assert response.json()["path"] == f"{UPLOADS_FOLDER}/{saved_name}"
    assert files_in(uploads) == [saved_name]
    assert all(p.resolve().parent == uploads.resolve() for p in uploads.iterdir())


@pytest.mark.parametrize(
    ("raw", "image_format", "expected"),
    [
        ("a\x00b.jpg", "JPEG", "a_b.jpg"),
        ("tab\tand\nnewline.heic", "HEIF", "tab_and_newline.heic"),
        (None, "PNG", "photo.png"),
        ("..\x00", "GIF", "photo.gif"),
        ("IMG_0001.HEIC", "JPEG", "IMG_0001.jpg"),
        ("长" * 200 + ".jpg", "JPEG", "长" * 50 + ".jpg"),  # 150 bytes of UTF-8 at most
    ],
)
def test_safe_file_name(raw: str | None, image_format: str, expected: str) -> None:
    assert safe_file_name(raw, image_format) == expected


def test_an_empty_file_name_is_a_clear_422(vision_server: Served) -> None:
    with vision_server.client() as client:
        response = upload(client, "", jpeg_of((1, 2, 3)))
    assert response.status_code == 422 and response.json()["detail"].startswith("body.file:")


def test_an_upload_never_overwrites_a_file(vision_server: Served) -> None:
    uploads = (vision_server.app.library or Path()) / UPLOADS_FOLDER
    uploads.mkdir()
    existing = jpeg_of((0, 200, 0))
    (uploads / "same.jpg").write_bytes(existing)
    with vision_server.client() as client:
        paths = []
        for colour in ((0, 0, 200), (200, 200, 0)):
            body = upload(client, "same.jpg", jpeg_of(colour)).json()
            vision_server.wait_job(client, body["job_id"])
            paths.append(body["path"])
    assert paths == [f"{UPLOADS_FOLDER}/same-1.jpg", f"{UPLOADS_FOLDER}/same-2.jpg"]
    assert (uploads / "same.jpg").read_bytes() == existing
    assert files_in(uploads) == ["same-1.jpg", "same-2.jpg", "same.jpg"]


def test_upload_without_a_library_is_409(
    start_server: ServerFactory, make_settings: SettingsFactory
) -> None:
    served = start_server(make_settings(library=None))
    with served.client() as client:
        response = upload(client, "x.jpg", jpeg_of((1, 2, 3)))
    assert response.status_code == 409
    assert "no photo library configured" in response.json()["detail"]


def _reindex(served: Served, client: httpx.Client) -> dict[str, Any]:
    return served.wait_job(client, client.post("/api/index/jobs").json()["job_id"])


def _found_paths(client: httpx.Client, text: str) -> list[str]:
    results = client.post("/api/recommend", json={"text": text, "top_k": 10}).json()["results"]
    return [r["path"] for r in results]


def test_a_deleted_photo_stays_out_after_reindex(
    start_server: ServerFactory, make_settings: SettingsFactory, small_library: SmallLibrary
) -> None:
    settings = make_settings(library=small_library.root)
    served = start_server(settings, descriptions=small_library.descriptions)
    kept, gone = small_library.photos[0], small_library.photos[1]
    with served.client() as client:
        _reindex(served, client)
        ids = dict(served.app.catalog.files())
        assert kept.rel_path in _found_paths(client, kept.captions[4])
        out = client.delete(f"/api/photos/{ids[kept.rel_path]}")
        out_and_deleted = client.delete(
            f"/api/photos/{ids[gone.rel_path]}", params={"delete_file": "true"}
        )
        again = client.delete(f"/api/photos/{ids[kept.rel_path]}")
        after_delete = _found_paths(client, kept.captions[4])
        job = _reindex(served, client)
        after_reindex = _found_paths(client, kept.captions[4])
        meta = client.get(f"/api/photos/{ids[kept.rel_path]}")
        status = client.get("/api/status").json()
    assert out.json() == {
        "photo_id": ids[kept.rel_path], "removed_from_index": True, "files_deleted": [],
    }  # fmt: skip
    assert out_and_deleted.json()["files_deleted"] == [gone.rel_path]
    assert (small_library.root / kept.rel_path).is_file()  # only out of the index
    assert not (small_library.root / gone.rel_path).exists()
    assert again.status_code == 404 and meta.status_code == 404
    assert kept.rel_path not in after_delete and kept.rel_path not in after_reindex
    assert job["counts"]["skipped"] == {"excluded": 1}
    assert (job["counts"]["scanned"], job["counts"]["new"], job["counts"]["embedded"]) == (28, 0, 0)
    assert (status["photos"], status["files"]) == (28, 28)


def test_uploading_a_deleted_photo_again_brings_it_back(
    vision_server: Served, eval_photos: list[bytes]
) -> None:
    with vision_server.client() as client:
        first = upload(client, "back.jpg", eval_photos[2]).json()
        vision_server.wait_job(client, first["job_id"])
        client.delete(f"/api/photos/{first['photo_id']}")
        kept_out = _reindex(vision_server, client)
        second = upload(client, "back.jpg", eval_photos[2]).json()
        vision_server.wait_job(client, second["job_id"])
        photo = client.get(f"/api/photos/{first['photo_id']}").json()
    assert kept_out["counts"]["skipped"] == {"excluded": 1}
    assert second["path"] == f"{UPLOADS_FOLDER}/back-1.jpg"
    assert photo["indexed"] is True


def test_an_upload_during_a_job_is_indexed_by_a_follow_up_job(
    start_server: ServerFactory,
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    openai_server: FakeOpenAIServer,
) -> None:
    openai_server.set_mode("vision", delay_s=0.1)
    vision = vision_settings(openai_server)
    served = start_server(make_settings(library=small_library.root, vision=vision))
    with served.client() as client:
        running = client.post("/api/index/jobs").json()["job_id"]
        body = upload(client, "late.jpg", jpeg_of((250, 250, 250))).json()
        served.wait_job(client, running)
        wait_for(lambda: len(client.get("/api/index/jobs").json()["jobs"]) == 2, "a follow-up")
        follow_up = client.get("/api/index/jobs").json()["jobs"][0]
        follow_up = served.wait_job(client, follow_up["job_id"])
        photo = client.get(f"/api/photos/{body['photo_id']}").json()
    assert (body["status"], body["job_id"]) == ("queued", running)
    assert follow_up["trigger"] == "follow-up" and follow_up["state"] == "succeeded"
    assert photo["indexed"] is True


def test_an_upload_while_another_process_indexes_gets_indexed_when_it_ends(
    vision_server: Served, empty_library: Path
) -> None:
    other_process = IndexLock(
        vision_server.settings.data_dir / "index.library.lock"
    )  # its own flock
    with vision_server.client() as client:
        with other_process.hold("cli-job-1"):
            body = upload(client, "while-busy.jpg", jpeg_of((30, 90, 220))).json()
            assert client.get(f"/api/photos/{body['photo_id']}").status_code == 404
        wait_for(
            lambda: (
                client.get(f"/api/photos/{body['photo_id']}").status_code == 200
                and client.get(f"/api/photos/{body['photo_id']}").json()["indexed"]
            ),
            "the upload indexed by a job that started by itself",
        )
        jobs = client.get("/api/index/jobs").json()["jobs"]
    assert (body["status"], body["job_id"]) == ("busy", "cli-job-1")
    assert [j["trigger"] for j in jobs] == ["follow-up"]


def _form(parts: list[tuple[str, str, bytes]], boundary: str = "b0undary") -> bytes:
    """A multipart body of (part name, file name, bytes), the file name's bytes as GBK when it
    cannot be Latin-1 (what a Chinese Windows tool sends)."""
    body = b""
    for name, file_name, data in parts:
        encoded = file_name.encode("gbk")
        body += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="'.encode()
            + encoded
            + b'"\r\nContent-Type: image/jpeg\r\n\r\n'
            + data
            + b"\r\n"
        )
    return body + f"--{boundary}--\r\n".encode()


@pytest.mark.parametrize(
    ("parts", "said"),
    [
        ([("file", f"p{i}.jpg") for i in range(200)], "200 parts (200 named 'file')"),
        ([("file", "a.jpg"), ("extra", "b.jpg")], "2 parts (1 named 'file', 1 named 'extra')"),
    ],
)
def test_every_part_of_an_upload_is_counted_none_dropped_unsaid(
    vision_server: Served, parts: list[tuple[str, str]], said: str
) -> None:
    photo = jpeg_of((200, 30, 30), (16, 16))
    body = _form([(name, file_name, photo) for name, file_name in parts])
    headers = {"Content-Type": "multipart/form-data; boundary=b0undary"}
    with vision_server.client() as client:
        for path in ("/api/photos", "/api/search/similar"):
            response = client.post(path, content=body, headers=headers)
            assert response.status_code == 400, (path, response.text)
            assert said in response.json()["detail"] and response.json()["message"]
        jobs = client.get("/api/index/jobs").json()["jobs"]
    assert files_in((vision_server.app.library or Path()) / UPLOADS_FOLDER) == []
    assert jobs == []


def test_a_gbk_file_name_is_saved_as_the_chinese_it_was(vision_server: Served) -> None:
    body = _form([("file", "中文照片.jpg", jpeg_of((30, 200, 30)))])
    headers = {"Content-Type": "multipart/form-data; boundary=b0undary"}
    with vision_server.client() as client:
        response = client.post("/api/photos", content=body, headers=headers)
    assert response.status_code == 201, response.text
    assert response.json()["path"] == f"{UPLOADS_FOLDER}/中文照片.jpg"
    saved = files_in((vision_server.app.library or Path()) / UPLOADS_FOLDER)
    assert saved == ["中文照片.jpg"]
