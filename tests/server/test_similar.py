"""Similar photos by what they look like, over real HTTP, on real evaluation photos."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from bot.commands import recommend_text
from client import result_from_json
from config import load_settings
from index.search.embed import SentenceTransformerEmbedder
from index.visual.search import SAME_MOMENT
from index.wiring import build_app
from server.app import create_app
from tests.server.conftest import TOKEN, Served, serving
from tests.support.core_fixtures import EVAL_DIR, build_small_library, read_eval_captions
from tests.support.edits import burst_neighbour, edited_copy

PHOTOS = 40


@pytest.fixture(scope="module")
def visual_server(
    tmp_path_factory: pytest.TempPathFactory, m3e_path: Path, embedder: SentenceTransformerEmbedder
) -> Iterator[Served]:
    """40 eval photos plus two burst neighbours of the first, indexed (visual phase included)."""
    root = tmp_path_factory.mktemp("visual")
    library = build_small_library(root, PHOTOS)
    first = (library.root / library.photos[0].rel_path).read_bytes()
    for number, shift in enumerate((0.02, 0.04), start=1):
        (library.root / f"burst_{number}.jpg").write_bytes(burst_neighbour(first, shift))
    settings = load_settings(
        library=library.root,
        data_dir=root / "data",
        embedding={"model": str(m3e_path)},
        rerank={"enabled": False},
        admin_token=TOKEN,
    )
    app = build_app(settings, descriptions=library.descriptions, embedder=embedder)
    try:
        report = app.index()
        assert report.visual_embedded == PHOTOS + 2 and report.visual_failed == 0
        api = create_app(app, settings)
        with serving(api) as url:
            yield Served(url, api, app, settings, TOKEN, library)
    finally:
        app.close()


def _id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_an_edited_copy_brings_its_original_back_first(visual_server: Served) -> None:
    library = visual_server.library
    assert library is not None
    first_hits, labelled = 0, 0
    with visual_server.client() as client:
        for photo in library.photos:
            original = (library.root / photo.rel_path).read_bytes()
            response = client.post(
                "/api/search/similar", files={"file": ("edit.jpg", edited_copy(original))}
            )
            assert response.status_code == 200, response.text
            results = response.json()["results"]
            ids = [r["photo_id"] for r in results]
            assert len(ids) == len(set(ids)) == 5
            if ids[0] == _id(original):
                first_hits += 1
                labelled += results[0]["reason"].startswith(SAME_MOMENT)
    assert first_hits >= 0.9 * PHOTOS, f"original first for {first_hits} of {PHOTOS}"
    assert labelled >= 0.9 * PHOTOS, f"labelled as the same photo {labelled} of {PHOTOS}"


def test_a_burst_shows_once_labelled_with_how_many_it_stands_for(visual_server: Served) -> None:
    library = visual_server.library
    assert library is not None
    first = (library.root / library.photos[0].rel_path).read_bytes()
    with visual_server.client() as client:
        found = client.get(f"/api/photos/{_id(first)}/similar", params={"top_k": 4}).json()
    results = found["results"]
    bursts = {_id((library.root / f"burst_{n}.jpg").read_bytes()) for n in (1, 2)}
    assert [r["photo_id"] for r in results].count(_id(first)) == 0  # never the photo itself
    assert results[0]["photo_id"] in bursts
    assert results[0]["reason"] == SAME_MOMENT + "；另有 1 张几乎相同的照片已合并"
    assert not bursts & {r["photo_id"] for r in results[1:]}  # one moment, one result
    assert len(results) == 4


def test_similar_to_a_photo_that_is_not_in_the_library_is_404(visual_server: Served) -> None:
    with visual_server.client() as client:
        missing = client.get(f"/api/photos/{'0' * 64}/similar")
        malformed = client.get("/api/photos/not-an-id/similar")
    assert missing.status_code == 404 and "no photo" in missing.json()["detail"]
    assert malformed.status_code == 422


def test_an_unrelated_upload_gets_no_same_photo_label(visual_server: Served) -> None:
    """A photo from outside the library (eval photo 41) has no copy there: nothing is labelled."""
    outsider = read_eval_captions(PHOTOS + 1)[PHOTOS]
    data = (EVAL_DIR / "images" / outsider.rel_path).read_bytes()
    with visual_server.client() as client:
        results = client.post("/api/search/similar", files={"file": ("x.jpg", data)}).json()
    assert results["results"] and not any(
        r["reason"].startswith(SAME_MOMENT) for r in results["results"]
    )


def test_look_alikes_show_a_0_to_100_likeness_never_a_match_of_0(visual_server: Served) -> None:
    """找相似 / 以图找图: each look-alike's 相似度 (likeness) is in 1..100, in the order shown,
    is the score the answer carries (`match`), and is what its reason says, never "匹配度"."""
    library = visual_server.library
    assert library is not None
    photo_id = _id((library.root / library.photos[3].rel_path).read_bytes())
    with visual_server.client() as client:
        results = client.get(f"/api/photos/{photo_id}/similar").json()["results"]
    alike = [r["likeness"] for r in results]
    assert alike and all(0 < a <= 100 for a in alike) and alike == sorted(alike, reverse=True)
    assert [r["match"] for r in results] == alike
    for r in results:
        assert f"相似度 {r['likeness']:.0f}" in r["reason"] and "匹配度" not in r["reason"]
    bot_reply = recommend_text(result_from_json(_answer_json(results)), similar=True)
    assert "匹配度" not in bot_reply and f"相似度 {alike[0]:.0f}" in bot_reply


def _answer_json(results: list[dict[str, object]]) -> dict[str, object]:
    """A similar answer's JSON as the bot reads it over HTTP."""
    return {
        "query": "x.jpg",
        "results": results,
        "notes": [],
        "rerank": {"state": "off", "reason": None},
        "nothing_fits": False,
        "time_place": None,
    }


def test_a_small_file_of_a_huge_picture_is_refused_or_decoded_small(
    visual_server: Served, tmp_path: Path
) -> None:
    """The red team's 115 KB grey PNG of 10,900 x 10,900: refused before decoding (413, in
    Chinese, no Python repr); the same picture as a JPEG is decoded at 1/8 scale and answered."""
    grey = Image.new("L", (10_900, 10_900), 128)
    png, jpeg = io.BytesIO(), io.BytesIO()
    grey.save(png, "PNG", optimize=True)
    grey.save(jpeg, "JPEG", quality=80)
    with visual_server.client() as client:
        refused = client.post("/api/search/similar", files={"file": ("grey.png", png.getvalue())})
        answered = client.post("/api/search/similar", files={"file": ("big.jpg", jpeg.getvalue())})
    assert refused.status_code == 413, refused.text
    body = refused.json()
    assert body["reason"] == "too_many_pixels" and "照片太大" in body["message"]
    assert " at 0x" not in refused.text
    # decoded at 1/8 and answered: a flat grey picture looks like nothing in the library
    assert answered.status_code == 200, answered.text
    assert [n["kind"] for n in answered.json()["notes"]] == ["no_similar"], answered.text


def test_an_unreadable_upload_is_named_without_a_python_repr(visual_server: Served) -> None:
    """Pillow names what it cannot read by its repr (`<_io.BytesIO object at 0x…>`)."""
    with visual_server.client() as client:
        answer = client.post("/api/search/similar", files={"file": ("x.jpg", b"not an image")})
    assert answer.status_code == 415
    assert " at 0x" not in answer.text and "<_io" not in answer.text
