"""The web page in real headless Chromium against the real server and a real 30-photo library.

Each test gets its own server (`start_server`: uvicorn on a free loopback port) over a `PeiTu`
built from the `small_library` fixture with its sidecar descriptions and the real m3e-small
model, and an admin token that the test types into the page like a person would.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from index.service import PeiTu
from server.uploads import UPLOADS_FOLDER
from tests.server.conftest import Served, ServerFactory, vision_settings
from tests.server.web_support import CHROMIUM, CHROMIUM_FLAGS, make_png, require_browser_tooling
from tests.support.core_fixtures import SettingsFactory, SmallLibrary
from tests.support.openai_server import FakeOpenAIServer

if TYPE_CHECKING:
    from playwright.sync_api import Browser, FilePayload, Page

pytestmark = pytest.mark.e2e

TOKEN = "web-test-token"
UPLOAD_NAME = "橙色日落.png"
UPLOAD_DESCRIPTION = "一张纯橙色的图片，像傍晚橙红色的天空，温暖的夕阳色调。"
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require_browser_tooling()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def server(
    start_server: ServerFactory, make_settings: SettingsFactory, small_library: SmallLibrary
) -> Served:
    # The upload test's photo gets a description too, so indexing it needs no vision model.
    line = json.dumps(
        {"image": f"{UPLOADS_FOLDER}/{UPLOAD_NAME}", "description": UPLOAD_DESCRIPTION},
        ensure_ascii=False,
    )
    with small_library.descriptions.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")
    settings = make_settings(library=small_library.root, admin_token=TOKEN)
    return start_server(settings, descriptions=small_library.descriptions, library=small_library)


@pytest.fixture
def peitu(server: Served) -> PeiTu:
    return server.app


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    yield page
    context.close()
    assert not script_errors, f"JavaScript errors on the page: {script_errors}"


def screenshot(page: Page, name: str, tmp_path: Path) -> Path:
    """Save a full-page screenshot (to PEITU_TEST_SCREENSHOTS when set, to look at)."""
    folder = Path(os.environ.get("PEITU_TEST_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"peitu-web-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def enter_token(page: Page, token: str, expect: str = "已保存") -> None:
    """Type the token and save it; the page checks it with a request and says so."""
    page.fill("#token-input", token)
    page.click("#token-form button[type=submit]")
    page.wait_for_selector(f"#token-state:has-text('{expect}')")


def loaded_thumbnails(page: Page, selector: str) -> list[int]:
    """naturalWidth of each image once all of them have finished loading (0 = broken)."""
    page.wait_for_function(
        """sel => [...document.querySelectorAll(sel)]
            .every(i => (i.src && i.complete) || i.classList.contains('broken'))""",
        arg=selector,
    )
    widths: list[int] = page.eval_on_selector_all(selector, "imgs => imgs.map(i => i.naturalWidth)")
    return widths


def file_payload(name: str, mime_type: str, data: bytes) -> FilePayload:
    return {"name": name, "mimeType": mime_type, "buffer": data}


def search(page: Page, text: str) -> dict[str, Any]:
    """Type a text into the search box, press the button; the JSON the page received."""
    page.fill("#search-text", text)
    with page.expect_response("**/api/recommend") as response:
        page.click("#search-button")
    body: dict[str, Any] = response.value.json()
    return body


def test_search_shows_photos_with_reasons(
    page: Page, server: Served, peitu: PeiTu, small_library: SmallLibrary, tmp_path: Path
) -> None:
    report = peitu.index("incremental")
    assert report.embedded == len(small_library.photos)
    target = small_library.photos[0]
    page.goto(server.url + "/")
    enter_token(page, TOKEN)

    result = search(page, target.captions[4])  # a caption not in the stored description

    cards = page.locator("#results .card")
    assert result["results"], "the search found nothing"
    cards.nth(len(result["results"]) - 1).wait_for()
    assert cards.count() == len(result["results"])
    assert page.locator(".card .reason").all_text_contents() == [
        r["reason"] for r in result["results"]
    ]
    assert page.locator(".card .rank").all_text_contents() == [
        f"#{r['rank']}" for r in result["results"]
    ]
    shown = [round(r["match"]) for r in result["results"]]
    assert page.locator(".card .match").all_text_contents() == [f"匹配度 {m}" for m in shown]
    assert shown == sorted(shown, reverse=True) and min(shown) >= 50  # one order, one rule
    assert page.locator(".card .closest").count() == 0
    assert target.rel_path in [r["path"] for r in result["results"]]
    widths = loaded_thumbnails(page, "#results .card img")
    assert len(widths) == len(result["results"]) and all(w > 0 for w in widths), widths
    assert result["rerank"]["state"] == "off"  # switched off by the admin: nothing to say
    assert page.locator("#search-info").is_hidden()
    screenshot(page, "search", tmp_path)


def test_nothing_fits_shows_an_empty_state_and_the_closest_on_request(
    page: Page, server: Served, peitu: PeiTu
) -> None:
    peitu.index("incremental")
    page.goto(server.url + "/")
    enter_token(page, TOKEN)
    result = search(page, "线性代数作业写不完")
    assert result["nothing_fits"] is True and result["results"] == []
    page.locator("#search-empty").wait_for(state="visible")
    assert page.locator("#results .card").count() == 0
    with page.expect_response("**/api/recommend") as response:
        page.click("#search-closest")
    closest = response.value.json()
    page.locator("#results .card").nth(len(closest["results"]) - 1).wait_for()
    assert closest["results"] and page.locator("#search-empty").is_hidden()
    assert page.locator(".card .match").all_text_contents() == [
        f"匹配度 {math.floor(r['match'] + 0.5)}"
        for r in closest["results"]  # Math.round
    ]
    assert page.locator(".card .closest").count() == len(closest["results"])  # each labelled
    assert "没有完全适合的照片" in page.inner_text("#search-info")


def test_reranked_search_and_search_by_image(
    page: Page,
    start_server: ServerFactory,
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    openai_server: FakeOpenAIServer,
    tmp_path: Path,
) -> None:
    # Vision and rerank through the local OpenAI-compatible test server, over real HTTP.
    rerank = {"enabled": True, "base_url": openai_server.base_url, "model": "fake-max"}
    settings = make_settings(
        library=small_library.root,
        admin_token=TOKEN,
        vision=vision_settings(openai_server),
        rerank=rerank,
    )
    served = start_server(settings)
    assert served.app.index("incremental").embedded == len(small_library.photos)
    first_id = hashlib.sha256((small_library.root / small_library.photos[0].rel_path).read_bytes())
    with served.client() as client:
        description = client.get(f"/api/photos/{first_id.hexdigest()}").json()["description"]
    page.goto(served.url + "/")
    enter_token(page, TOKEN)

    # "?": the closest photos anyway. The fake vision model gives every photo a near-identical
    # colour description, so against this library's own background nothing stands out.
    result = search(page, "?" + description)

    assert result["reranked"] is True and result["results"], result
    page.locator("#results .card").nth(len(result["results"]) - 1).wait_for()
    reasons = page.locator(".card .reason").all_text_contents()
    assert reasons == [r["reason"] for r in result["results"]]
    assert all(reason.startswith("与「") for reason in reasons)  # written by the "LLM"
    assert "向量相似度" not in page.inner_text("#search-info")  # no "rerank failed" note

    openai_server.set_mode("rerank", malformed=True)  # the "LLM" answers garbage
    failed = search(page, "?" + description)
    openai_server.set_mode("rerank", malformed=False)
    assert failed["rerank"]["state"] == "failed" and failed["results"], failed
    page.wait_for_function(
        "() => document.querySelector('#search-info').innerText.includes('排序模型暂时不可用')"
    )
    assert "未启用" not in page.inner_text("#search-info")  # it is on, and failed

    blue = make_png(120, 90, (40, 110, 220))
    with page.expect_response("**/api/search/similar") as response:
        page.set_input_files("#similar-file", files=[file_payload("蓝.png", "image/png", blue)])
    similar: dict[str, Any] = response.value.json()
    assert response.value.status == 200 and similar["results"], similar
    page.wait_for_function(
        "ids => [...document.querySelectorAll('#results .card')].map(c => c.dataset.photoId)"
        ".join() === ids.join()",
        arg=[r["photo_id"] for r in similar["results"]],
    )
    widths = loaded_thumbnails(page, "#results .card img")
    assert widths and all(w > 0 for w in widths)
    assert "与「蓝.png」相似的照片" in page.inner_text("#search-info")
    alike = [round(r["likeness"]) for r in similar["results"]]
    assert page.locator(".card .match").all_text_contents() == [f"相似度 {a}" for a in alike]
    assert alike[0] > 0 and "匹配度" not in page.inner_text("#results")
    assert loaded_thumbnails(page, "#query-photo-img") == [120]  # the query photo, beside
    assert "蓝.png" in page.inner_text("#query-photo")
    screenshot(page, "similar", tmp_path)

    first = similar["results"][0]
    with page.expect_response(f"**/api/photos/{first['photo_id']}/similar") as response:
        page.locator("#results .card").first.get_by_role("button", name="找相似").click()
    like: dict[str, Any] = response.value.json()
    assert response.value.status == 200 and like["results"], like
    assert first["photo_id"] not in [r["photo_id"] for r in like["results"]]
    page.wait_for_function(
        "ids => [...document.querySelectorAll('#results .card')].map(c => c.dataset.photoId)"
        ".join() === ids.join()",
        arg=[r["photo_id"] for r in like["results"]],
    )
    assert loaded_thumbnails(page, "#query-photo-img")[0] > 0  # the library photo, beside
    assert first["path"] in page.inner_text("#query-photo")


def test_model_text_is_shown_as_text_not_markup(
    page: Page,
    start_server: ServerFactory,
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
) -> None:
    hostile = '<b id="injected">海边日落</b><img src=x onerror="window.injected=1">海边日落'
    target = small_library.photos[0].rel_path
    line = json.dumps({"image": target, "description": hostile}, ensure_ascii=False)
    small_library.descriptions.write_text(line + "\n", encoding="utf-8")
    settings = make_settings(library=small_library.root, admin_token=TOKEN)
    served = start_server(settings, descriptions=small_library.descriptions)
    served.app.index("incremental")
    page.goto(served.url + "/")
    enter_token(page, TOKEN)

    result = search(page, "海边日落")

    assert [r["path"] for r in result["results"]] == [target]
    page.locator(".card .reason").wait_for()
    shown = page.locator(".card .description p").text_content() or ""
    assert "<b id=" in shown  # the model's markup is shown as characters
    assert page.locator("#injected").count() == 0
    assert page.evaluate("() => window.injected") is None


def test_admin_starts_a_job_and_follows_it_to_the_end(
    page: Page, server: Served, small_library: SmallLibrary, tmp_path: Path
) -> None:
    count = len(small_library.photos)
    page.goto(server.url + "/#admin")
    enter_token(page, TOKEN)
    page.wait_for_selector("#status-files:has-text('0')")

    page.click("#index-start")

    page.wait_for_selector("#job[data-state=succeeded]")
    assert page.inner_text("#job-state") == "已完成"
    job_id = page.inner_text("#job-id")
    with server.client() as client:
        job = client.get(f"/api/index/jobs/{job_id}").json()
    assert job["state"] == "succeeded"
    expected = {"scanned": count, "new": count, "described": count, "embedded": count, "failed": 0}
    for key, value in expected.items():
        assert job["counts"][key] == value, key
        assert page.inner_text(f"#job-counts tr[data-count={key}] td") == str(value), key
    assert job["progress"]["phase"] == "visual"  # the last phase: pixels for similar photos
    assert (job["progress"]["done"], job["progress"]["total"]) == (count, count)
    assert page.inner_text("#job-progress-text") == f"{count} / {count}"
    assert page.eval_on_selector("#job-progress", f"p => p.value === p.max && p.max === {count}")
    assert page.locator("#job-errors-box").is_hidden()
    page.wait_for_selector(f"#status-photos:has-text('{count}')")
    assert page.is_enabled("#index-start")
    screenshot(page, "admin", tmp_path)


def test_upload_saves_and_indexes_the_photo(
    page: Page, server: Served, peitu: PeiTu, small_library: SmallLibrary, tmp_path: Path
) -> None:
    peitu.index("incremental")
    png = make_png(160, 120, (240, 140, 40))
    page.goto(server.url + "/#upload")
    enter_token(page, TOKEN)

    page.set_input_files("#upload-file", files=[file_payload(UPLOAD_NAME, "image/png", png)])

    page.wait_for_selector(".upload-item[data-state=done]")
    photo_id = hashlib.sha256(png).hexdigest()
    facts = page.inner_text(".upload-item .upload-facts")
    assert photo_id in facts and f"{UPLOADS_FOLDER}/{UPLOAD_NAME}" in facts
    assert (small_library.root / UPLOADS_FOLDER / UPLOAD_NAME).read_bytes() == png
    assert loaded_thumbnails(page, ".upload-item .upload-thumb") == [160]
    screenshot(page, "upload", tmp_path)

    page.click(".upload-item .upload-job")  # follow the indexing job the upload started
    page.wait_for_selector("#job[data-state=succeeded]")
    assert page.inner_text("#job-kind") == "上传后索引"
    assert page.inner_text("#job-counts tr[data-count=embedded] td") == "1"
    page.goto(server.url + "/#search")
    result = search(page, "橙色的夕阳天空")
    assert photo_id in [r["photo_id"] for r in result["results"]]
    assert loaded_thumbnails(page, f".card[data-photo-id='{photo_id}'] img") == [160]


def test_upload_of_a_non_image_shows_why(page: Page, server: Served) -> None:
    page.goto(server.url + "/#upload")
    enter_token(page, TOKEN)
    page.set_input_files(
        "#upload-file", files=[file_payload("notes.png", "image/png", b"not a photo at all")]
    )
    page.wait_for_selector(".upload-item[data-state=failed]")
    status = page.inner_text(".upload-item .upload-status")
    assert "不是能打开的照片" in status and "JPEG" in status
    assert page.locator(".upload-item .upload-facts").count() == 0


def test_wrong_token_shows_an_error(page: Page, server: Served, tmp_path: Path) -> None:
    page.goto(server.url + "/")
    enter_token(page, "not-the-token", expect="令牌不对，没有保存")
    page.fill("#search-text", "今天蓝天白云")
    page.click("#search-button")
    error = page.locator("#search-error")
    error.wait_for()
    assert "令牌" in error.inner_text()
    assert page.locator("#results .card").count() == 0
    screenshot(page, "wrong-token", tmp_path)

    page.click("a[data-view=admin]")
    page.locator("#admin-error").wait_for()
    assert "令牌" in page.inner_text("#admin-error")


def test_a_second_job_is_refused_and_the_running_one_is_shown(
    page: Page, server: Served, peitu: PeiTu
) -> None:
    page.goto(server.url + "/#admin")
    enter_token(page, TOKEN)
    page.wait_for_selector("#status-indexing:has-text('否')")
    with peitu.lock.hold("cli-job-1"):  # as if `peitu index` ran in another process
        # A click made before the page's status poll saw the other job (the button is then
        # disabled, which is the point of following jobs live); the server refuses it.
        page.evaluate("() => startIndex('incremental')")
        page.locator("#admin-error").wait_for()
        assert "已有索引任务在运行" in page.inner_text("#admin-error")
        page.wait_for_selector("#job[data-state=running]")
        assert page.inner_text("#job-id") == "cli-job-1"
        assert page.is_disabled("#index-start")
    # Once the other process is done the job is gone (404) and the page stops following it.
    page.wait_for_function("() => !document.querySelector('#index-start').disabled")


def test_page_is_served_without_token_but_api_is_not(server: Served) -> None:
    assert httpx.get(server.url + "/healthz").status_code == 200
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "配图" in page.text
    assert httpx.get(server.url + "/app.js").status_code == 200
    assert httpx.post(server.url + "/api/recommend", json={"text": "x"}).status_code == 401
