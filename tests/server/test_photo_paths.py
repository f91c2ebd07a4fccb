"""Nothing outside the library is read, served or deleted, whatever links appear in it.

Photos are indexed as ordinary files; then files and a folder are swapped for symlinks that
lead outside (a secret file, `/proc/self/environ`, a folder elsewhere), a FIFO and a link
that stays inside. The server opens a file only after resolving it, at the moment it opens it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from index.service import PeiTu
from tests.server.conftest import TOKEN, Served, ServerFactory, vision_settings
from tests.support.core_fixtures import SettingsFactory, build_small_library
from tests.support.openai_server import FakeOpenAIServer


def file_sha256(path: Path) -> str:
    """A photo's id: the SHA-256 of its bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


SECRET = b"PEITU_TEST_SECRET=do-not-serve-me\n"


@dataclass
class Swapped:
    served: Served
    library: Path
    outside: Path
    ids: dict[str, str]  # role -> photo id


@pytest.fixture
def swapped(
    start_server: ServerFactory,
    make_settings: SettingsFactory,
    openai_server: FakeOpenAIServer,
    tmp_path: Path,
) -> Swapped:
    small = build_small_library(tmp_path / "lib", count=6)
    library = small.root
    names = [photo.rel_path for photo in small.photos]
    (library / "sub").mkdir()
    shutil.move(library / names[5], library / "sub" / names[5])
    roles = ["kept", "to_secret", "to_environ", "to_fifo", "to_inside", "in_sub"]
    paths = {role: library / name for role, name in zip(roles, names, strict=True)}
    paths["in_sub"] = library / "sub" / names[5]
    ids = {role: file_sha256(path) for role, path in paths.items()}
    settings = make_settings(
        library=library, admin_token=TOKEN, vision=vision_settings(openai_server)
    )
    served = start_server(settings)
    served.app.index()
    assert len(served.app.catalog.embedded()) == 6

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    shutil.copyfile(paths["in_sub"], outside / names[5])  # the same photo, really elsewhere
    _swap_for_link(paths["to_secret"], outside / "secret.txt")
    _swap_for_link(paths["to_environ"], Path("/proc/self/environ"))
    paths["to_fifo"].unlink()
    os.mkfifo(paths["to_fifo"])
    _swap_for_link(paths["to_inside"], paths["kept"])
    shutil.rmtree(library / "sub")
    (library / "sub").symlink_to(outside, target_is_directory=True)
    return Swapped(served, library, outside, ids)


def _swap_for_link(path: Path, target: Path) -> None:
    path.unlink()
    path.symlink_to(target)


def get(client: httpx.Client, photo_id: str, what: str) -> httpx.Response:
    return client.get(f"/api/photos/{photo_id}/{what}")


@pytest.mark.parametrize("role", ["to_secret", "to_environ", "to_fifo", "in_sub"])
@pytest.mark.parametrize("what", ["file", "thumbnail"])
def test_a_file_swapped_for_a_way_out_is_not_served(swapped: Swapped, role: str, what: str) -> None:
    with swapped.served.client() as client:
        response = get(client, swapped.ids[role], what)
    assert response.status_code == 404, response.text
    assert SECRET not in response.content and b"PATH=" not in response.content
    assert "no longer in the library" in response.json()["detail"]


def test_a_link_that_stays_inside_and_a_plain_file_are_served(swapped: Swapped) -> None:
    with swapped.served.client() as client:
        plain = get(client, swapped.ids["kept"], "file")
        linked = get(client, swapped.ids["to_inside"], "file")
        thumbnail = get(client, swapped.ids["to_inside"], "thumbnail")
    assert plain.status_code == linked.status_code == thumbnail.status_code == 200
    assert plain.headers["content-type"] == "image/jpeg"
    assert hashlib.sha256(plain.content).hexdigest() == swapped.ids["kept"]
    assert linked.content == plain.content
    assert thumbnail.content[:2] == b"\xff\xd8"


def test_the_bot_gets_no_path_that_leads_outside(swapped: Swapped) -> None:
    app: PeiTu = swapped.served.app
    for role in ("to_secret", "to_environ", "to_fifo", "in_sub"):
        assert app.photo_path(swapped.ids[role]) is None, role
        assert app.open_photo(swapped.ids[role]) is None, role
    real = app.photo_path(swapped.ids["to_inside"])
    assert real is not None and real == app.photo_path(swapped.ids["kept"])


@pytest.mark.parametrize("role", ["to_secret", "in_sub", "to_fifo"])
def test_delete_file_never_deletes_through_a_link_or_outside(swapped: Swapped, role: str) -> None:
    before = sorted(p.name for p in swapped.outside.iterdir())
    with swapped.served.client() as client:
        response = client.delete(f"/api/photos/{swapped.ids[role]}", params={"delete_file": True})
    assert response.status_code == 200, response.text
    assert response.json()["files_deleted"] == []
    assert response.json()["removed_from_index"] is True
    assert sorted(p.name for p in swapped.outside.iterdir()) == before
    assert (swapped.outside / "secret.txt").read_bytes() == SECRET


def test_delete_file_deletes_a_regular_file_inside(swapped: Swapped) -> None:
    app: PeiTu = swapped.served.app
    photo = app.catalog.photo(swapped.ids["kept"])
    assert photo is not None
    with swapped.served.client() as client:
        response = client.delete(f"/api/photos/{swapped.ids['kept']}", params={"delete_file": True})
    assert response.status_code == 200, response.text
    assert response.json()["files_deleted"] == [photo.rel_path]
    assert not (swapped.library / photo.rel_path).exists()
    assert os.path.islink(swapped.library / _rel(app, swapped.ids["to_inside"]))  # link kept


def _rel(app: PeiTu, photo_id: str) -> str:
    photo = app.catalog.photo(photo_id)
    assert photo is not None
    return photo.rel_path


@pytest.mark.parametrize("follow", [False, True])
def test_a_linked_folder_outside_is_indexed_and_served_only_when_the_user_allows_it(
    start_server: ServerFactory,
    make_settings: SettingsFactory,
    openai_server: FakeOpenAIServer,
    tmp_path: Path,
    follow: bool,
) -> None:
    """PEITU_INDEXING__FOLLOW_EXTERNAL_LINKS=true: the scan follows the library's links out,
    and the photos it found that way are served too (never a path with `..`); false: they
    are neither indexed nor served."""
    small = build_small_library(tmp_path / "elsewhere", count=2)
    library = tmp_path / "lib"
    library.mkdir()
    (library / "linked").symlink_to(small.root, target_is_directory=True)
    settings = make_settings(
        library=library,
        admin_token=TOKEN,
        vision=vision_settings(openai_server),
        indexing={"follow_external_links": follow},
    )
    served = start_server(settings)
    report = served.app.index()
    photo_id = file_sha256(small.root / small.photos[0].rel_path)
    assert (photo_id in served.app.catalog.embedded()) is follow
    assert (report.skipped.get("outside_library", 0) > 0) is not follow  # the folder link
    with served.client(token=TOKEN) as client:
        response = get(client, photo_id, "file")
    assert response.status_code == (200 if follow else 404)
    if follow:
        expected = (small.root / small.photos[0].rel_path).read_bytes()
        assert hashlib.sha256(response.content).digest() == hashlib.sha256(expected).digest()
