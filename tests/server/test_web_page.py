"""The web page as a Chinese home-server user uses it, in real headless Chromium.

Taking a photo out (download, copy, full-screen view), keyboard use, a grid without orphans,
several uploads dropped at once, the phone layout, auth errors that clear what was shown, a job
started by the CLI in another process followed live, and only Chinese in every error state.
"""

# ruff: noqa: F811  (the fixtures `browser` and `server` are imported from test_web)
from __future__ import annotations

import base64
import hashlib
import itertools
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from config import Settings
from index.doctor import run_checks
from index.service import PeiTu
from server.messages import message_for_status
from server.uploads import UPLOADS_FOLDER
from tests.server.conftest import Served, ServerFactory, vision_settings, wait_for
from tests.server.test_web import (
    TIMEOUT_MS,
    TOKEN,
    browser,  # noqa: F401  (a fixture)
    enter_token,
    file_payload,
    loaded_thumbnails,
    screenshot,
    search,
    server,  # noqa: F401  (a fixture)
)
from tests.server.web_support import make_png
from tests.support.core_fixtures import SettingsFactory, SmallLibrary
from tests.support.openai_server import FakeOpenAIServer

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

pytestmark = pytest.mark.e2e

PHONE = {"width": 390, "height": 844}
# Words a Chinese page may show in Latin letters: format names, the brand, setting names and
# commands (`peitu index`), file names.
_ALLOWED_LATIN = re.compile(
    r"peitu [a-z]+(?: --[a-z]+)?|PeiTu|JPEG|PNG|WebP|HEIC|HTTPS|GIF|BMP|Shift|PEITU_[A-Z_]+"
    r"|[\w.-]+\.(?:jpe?g|png|webp|heic)",
    re.IGNORECASE,
)
_MESSAGE_SELECTORS = (
    "[role=alert]:not([hidden])",
    "#token-state",
    "#search-info:not([hidden])",
    ".card-note:not([hidden])",
    ".upload-status",
    "#viewer-note:not([hidden])",
    "#job-failure:not([hidden])",
)


def assert_only_chinese_messages(page: Page) -> list[str]:
    """Every message the page shows now is Chinese: no English words, no Python reprs."""
    texts: list[str] = []
    for selector in _MESSAGE_SELECTORS:
        texts += [t.strip() for t in page.locator(selector).all_inner_texts() if t.strip()]
    for text in texts:
        assert re.search(r"[\u4e00-\u9fff]", text), f"not Chinese: {text!r}"
        latin = re.findall(r"[A-Za-z]{3,}", _ALLOWED_LATIN.sub("", text))
        assert not latin, f"English in a message: {latin} in {text!r}"
        assert "<_io" not in text and "object at 0x" not in text, text
    return texts


def _context(browser: Browser, **options: Any) -> BrowserContext:
    context = browser.new_context(**{"viewport": {"width": 1280, "height": 900}, **options})
    context.set_default_timeout(TIMEOUT_MS)
    return context


@pytest.fixture
def clipboard_page(browser: Browser) -> Iterator[Page]:
    """A desktop page that may write and read the clipboard (127.0.0.1 is a secure origin)."""
    context = _context(browser, permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, errors


@pytest.fixture
def phone_page(browser: Browser) -> Iterator[Page]:
    context = _context(browser, viewport=PHONE, is_mobile=True, has_touch=True)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def desktop_page(browser: Browser) -> Iterator[Page]:
    context = _context(browser)
    page = context.new_page()
    missing: list[str] = []
    page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.missing = missing  # type: ignore[attr-defined]
    yield page
    context.close()
    assert not errors, errors


def _indexed(served: Served) -> PeiTu:
    served.app.index("incremental")
    return served.app


def _search_with_enter(page: Page, text: str, top_k: int | None = None) -> dict[str, Any]:
    page.fill("#search-text", text)
    if top_k is not None:
        page.fill("#search-topk", str(top_k))
    with page.expect_response("**/api/recommend") as response:
        page.press("#search-text", "Enter")
    body: dict[str, Any] = response.value.json()
    page.locator("#results .card").nth(len(body["results"]) - 1).wait_for()
    return body


def test_a_result_is_downloaded_and_copied_and_thumbnails_work_by_keyboard(
    clipboard_page: Page,
    server: Served,
    small_library: SmallLibrary,
    tmp_path: Path,
) -> None:
    page = clipboard_page
    _indexed(server)
    page.goto(server.url + "/")
    enter_token(page, TOKEN)
    result = _search_with_enter(page, small_library.photos[0].captions[4])  # Enter searches
    first = result["results"][0]
    card = page.locator(f".card[data-photo-id='{first['photo_id']}']")
    original = (small_library.root / first["path"]).read_bytes()

    with page.expect_download() as download:
        card.locator("button.download").click()
    saved = Path(download.value.path())
    assert download.value.suggested_filename == Path(first["path"]).name
    assert saved.read_bytes() == original
    card.locator(".card-note:has-text('已下载')").wait_for()

    card.locator("button.copy").click()
    page.wait_for_selector(f".card[data-photo-id='{first['photo_id']}'][data-copied=true]")
    pasted = page.evaluate(
        """async () => {
            const [item] = await navigator.clipboard.read();
            const blob = await item.getType("image/png");
            const bitmap = await createImageBitmap(blob);
            return { types: item.types, width: bitmap.width, height: bitmap.height };
        }"""
    )
    with server.client() as client:
        photo = client.get(f"/api/photos/{first['photo_id']}").json()
    assert pasted["types"] == ["image/png"]
    assert (pasted["width"], pasted["height"]) == (photo["width"], photo["height"])
    assert "已复制" in card.locator(".card-note").inner_text()

    # Keyboard: a thumbnail takes the focus, Enter opens the full view, Escape closes it.
    card.locator(".thumb-button").focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("#viewer:not([hidden])")
    assert loaded_thumbnails(page, "#viewer-img")[0] == photo["width"]
    page.keyboard.press("Escape")
    page.wait_for_selector("#viewer", state="hidden")
    assert page.evaluate("() => document.activeElement.classList.contains('thumb-button')")
    assert_only_chinese_messages(page)
    screenshot(page, "card-actions", tmp_path)


def test_copy_without_clipboard_access_opens_the_photo_with_a_clear_hint(
    browser: Browser,
    server: Served,
    small_library: SmallLibrary,
) -> None:
    context = _context(browser)
    # As on a plain-HTTP LAN address, where browsers offer no clipboard API at all.
    context.add_init_script("Object.defineProperty(navigator, 'clipboard', {value: undefined})")
    page = context.new_page()
    try:
        _indexed(server)
        page.goto(server.url + "/")
        enter_token(page, TOKEN)
        result = _search_with_enter(page, small_library.photos[0].captions[4])
        card = page.locator("#results .card").first
        card.locator("button.copy").click()
        page.wait_for_selector("#viewer:not([hidden])")
        assert "不让网页直接复制" in card.locator(".card-note").inner_text()
        assert "右键" in page.inner_text("#viewer-note")
        assert loaded_thumbnails(page, "#viewer-img")[0] > 0
        assert result["results"]
        assert_only_chinese_messages(page)
    finally:
        context.close()


def test_five_results_fill_their_rows_and_the_page_has_a_favicon(
    desktop_page: Page,
    server: Served,
    tmp_path: Path,
) -> None:
    page = desktop_page
    _indexed(server)
    page.goto(server.url + "/")
    enter_token(page, TOKEN)
    result = _search_with_enter(page, "?小狗在草地上奔跑", top_k=5)  # the closest five
    assert len(result["results"]) == 5
    tops = page.eval_on_selector_all("#results .card", "cards => cards.map(c => c.offsetTop)")
    rows = [tops.count(top) for top in sorted(set(tops))]
    assert len(rows) > 1 and min(rows) >= max(rows) - 1, rows  # 3 + 2, never 4 + 1
    colour = page.eval_on_selector("#job-progress", "p => getComputedStyle(p).accentColor")
    assert colour == "rgb(217, 83, 79)"  # the page's red, not the browser's blue
    icon = httpx.get(server.url + "/favicon.ico")
    assert icon.status_code == 200 and icon.content[:4] == b"\x00\x00\x01\x00"
    assert not [u for u in page.missing if "/api/" not in u]  # type: ignore[attr-defined]
    screenshot(page, "grid", tmp_path)


def test_on_a_phone_a_result_opens_full_screen_for_a_long_press(
    phone_page: Page,
    server: Served,
    small_library: SmallLibrary,
    tmp_path: Path,
) -> None:
    page = phone_page
    _indexed(server)
    page.goto(server.url + "/")
    enter_token(page, TOKEN)
    _search_with_enter(page, small_library.photos[0].captions[4])
    page.locator("#results .card .thumb-button").first.tap()
    page.wait_for_selector("#viewer:not([hidden])")
    assert "长按" in page.inner_text("#viewer-hint")
    box = page.locator("#viewer").bounding_box()
    assert box is not None and (box["width"], box["height"]) == (PHONE["width"], PHONE["height"])
    assert loaded_thumbnails(page, "#viewer-img")[0] > 0
    screenshot(page, "phone-viewer", tmp_path)


def _drop_files(page: Page, selector: str, files: list[tuple[str, str, bytes]]) -> None:
    """Drop files on an element the way a person dragging them from the desktop does."""
    payload = [(name, mime, base64.b64encode(data).decode()) for name, mime, data in files]
    transfer = page.evaluate_handle(
        """files => {
            const dt = new DataTransfer();
            for (const [name, type, b64] of files) {
                const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                dt.items.add(new File([bytes], name, { type }));
            }
            return dt;
        }""",
        payload,
    )
    page.dispatch_event(selector, "dragenter", {"dataTransfer": transfer})
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def test_several_photos_dropped_at_once_each_get_progress_and_an_outcome(
    desktop_page: Page,
    server: Served,
    small_library: SmallLibrary,
    tmp_path: Path,
) -> None:
    page = desktop_page
    page.goto(server.url + "/#upload")
    enter_token(page, TOKEN)
    red, green = make_png(90, 60, (220, 30, 30)), make_png(60, 90, (30, 200, 60))
    files = [
        ("红.png", "image/png", red),
        ("绿.png", "image/png", green),
        ("notes.png", "image/png", b"just some text"),
    ]

    _drop_files(page, "#drop-zone", files)

    page.wait_for_function(
        "() => document.querySelectorAll('.upload-item[data-state=done],"
        " .upload-item[data-state=failed]').length === 3"
    )
    items = {
        page.locator(".upload-item .upload-name").nth(i).inner_text(): page.locator(
            ".upload-item"
        ).nth(i)
        for i in range(3)
    }
    for name, data in (("红.png", red), ("绿.png", green)):
        item = items[name]
        assert item.get_attribute("data-state") == "done"
        assert item.get_attribute("data-photo-id") == hashlib.sha256(data).hexdigest()
        assert item.locator("progress").evaluate("p => p.value === p.max")
        assert (small_library.root / UPLOADS_FOLDER / name).read_bytes() == data
    failed = items["notes.png"]
    assert failed.get_attribute("data-state") == "failed"
    assert "不是能打开的照片" in failed.locator(".upload-status").inner_text()
    assert not (small_library.root / UPLOADS_FOLDER / "notes.png").exists()
    assert_only_chinese_messages(page)
    screenshot(page, "multi-upload", tmp_path)


def test_upload_results_on_a_phone_have_no_squeezed_column(
    phone_page: Page,
    server: Served,
    tmp_path: Path,
) -> None:
    page = phone_page
    page.goto(server.url + "/#upload")
    enter_token(page, TOKEN)
    files = [
        file_payload(
            f"长长的文件名-{n}-日落海边.png", "image/png", make_png(80, 60, (n * 60, 90, 40))
        )
        for n in range(1, 3)
    ]
    page.set_input_files("#upload-file", files=files)
    page.wait_for_function(
        "() => document.querySelectorAll('.upload-item[data-state=done]').length === 2"
    )
    narrow = page.eval_on_selector_all(
        "#upload-list *",
        """nodes => nodes
            .filter(n => getComputedStyle(n).display !== 'inline' && n.getClientRects().length)
            .map(n => [n.tagName + '.' + n.className, n.getBoundingClientRect().width])
            .filter(([, width]) => width < 120)""",
    )
    assert narrow == []
    assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    screenshot(page, "phone-upload", tmp_path)


def test_an_auth_error_clears_the_results_that_were_shown(
    desktop_page: Page,
    server: Served,
    small_library: SmallLibrary,
    tmp_path: Path,
) -> None:
    page = desktop_page
    _indexed(server)
    page.goto(server.url + "/")
    enter_token(page, TOKEN)
    _search_with_enter(page, small_library.photos[0].captions[4])
    assert page.locator("#results .card").count() > 0

    # The token was changed on the server (here: the stored one no longer matches).
    page.evaluate("() => localStorage.setItem('peitu.adminToken', 'an-old-token')")
    page.fill("#search-text", "海边")
    with page.expect_response("**/api/recommend") as response:
        page.press("#search-text", "Enter")
    assert response.value.status == 401
    page.locator("#search-error").wait_for()
    assert page.locator("#results .card").count() == 0
    assert page.locator("#search-info").is_hidden()
    assert "管理令牌" in page.inner_text("#search-error")
    assert page.inner_text("#token-state") == "令牌无效"
    assert_only_chinese_messages(page)
    screenshot(page, "auth-error", tmp_path)

    # A wrong token typed in is checked at once and not kept.
    enter_token(page, "still-wrong", expect="令牌不对，没有保存")
    assert page.evaluate("() => localStorage.getItem('peitu.adminToken')") is None
    page.click("a[data-view=admin]")
    page.locator("#admin-error").wait_for()
    assert page.inner_text("#status-photos") == "–"
    assert_only_chinese_messages(page)
    enter_token(page, TOKEN)
    page.wait_for_selector(f"#status-photos:has-text('{len(small_library.photos)}')")


def test_error_states_show_only_chinese(
    desktop_page: Page,
    start_server: ServerFactory,
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
) -> None:
    page = desktop_page
    settings = make_settings(
        library=small_library.root, admin_token=TOKEN, server={"upload_max_mb": 0.5}
    )
    server = start_server(settings)
    page.goto(server.url + "/")
    enter_token(page, TOKEN)
    search(page, "今天蓝天白云")  # nothing indexed yet
    assert_only_chinese_messages(page)
    page.goto(server.url + "/#admin")
    with server.app.lock.hold("fd41f46fe2db"):  # a job of another process
        # A click made before the page's status poll saw the other job (the button is then
        # disabled, which is the point of following jobs live); the server refuses it.
        page.evaluate("() => startIndex('incremental')")
        page.locator("#admin-error").wait_for()
        texts = assert_only_chinese_messages(page)
        assert any("已有索引任务在运行" in t for t in texts)
        assert "fd41f46fe2db" not in page.inner_text("#admin-error")
    page.goto(server.url + "/#upload")
    big = b"\xff\xd8" + b"\x00" * (server.ctx.max_upload_bytes + 10)
    page.set_input_files("#upload-file", files=[file_payload("大.jpg", "image/jpeg", big)])
    page.wait_for_selector(".upload-item[data-state=failed]")
    assert "文件太大" in page.inner_text(".upload-item .upload-status")
    assert_only_chinese_messages(page)


def _serve_to_the_page(page: Page, start_server: ServerFactory, settings: Settings) -> Served:
    """A server of `settings` (one vision call at a time), on the page's search tab, token in."""
    served = start_server(settings)
    page.goto(served.url + "/#search")
    enter_token(page, TOKEN)
    return served


def _cli_env(served: Served, vision: dict[str, Any], m3e: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PEITU_", "DASHSCOPE_"))}
    env.update(
        HF_HUB_OFFLINE="1",
        PEITU_DATA_DIR=str(served.settings.data_dir),
        PEITU_LIBRARY=str(served.settings.library),
        PEITU_EMBEDDING__MODEL=m3e,
        PEITU_RERANK__ENABLED="false",
        PEITU_VISION__BASE_URL=vision["base_url"],
        PEITU_VISION__MODEL=vision["model"],
        PEITU_VISION__MAX_SIDE=str(vision["max_side"]),
        PEITU_VISION__CONCURRENCY="1",
    )
    return env


def test_a_job_started_by_the_cli_in_another_process_is_shown_live(
    desktop_page: Page,
    start_server: ServerFactory,
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    openai_server: FakeOpenAIServer,
    m3e_path: Path,
    tmp_path: Path,
) -> None:
    page = desktop_page
    vision = vision_settings(openai_server, concurrency=1)
    served = _serve_to_the_page(
        page,
        start_server,
        make_settings(library=small_library.root, vision=vision, admin_token=TOKEN),
    )
    openai_server.set_mode("vision", delay_s=0.4)  # slow enough to be seen while it runs
    cli = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "index"],
        env=_cli_env(served, vision, str(m3e_path)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # On the search tab: the top bar shows it.
        page.wait_for_selector("#live-job:not([hidden]):has-text('命令行索引')")
        page.click("a[data-view=admin]")
        page.wait_for_selector("#job[data-kind=cli][data-state=running]")
        page.wait_for_function(
            "() => /^[1-9]\\d* \\/ 30$/.test(document.querySelector('#job-progress-text').textContent)"
        )
        assert page.inner_text("#job-kind") == "命令行索引"
        page.wait_for_selector("#status-indexing:has-text('是')")  # the status card follows
        times = page.inner_text("#job-times")
        assert "开始于" in times and "已用时" in times
        assert page.is_disabled("#index-start")
        screenshot(page, "cli-job", tmp_path)
        openai_server.set_mode("vision", delay_s=0.0)
        assert cli.wait(timeout=300) == 0
    finally:
        cli.kill()
        cli.wait(timeout=30)
    # Until the page has asked again, the row it drew while the job ran says "进行中".
    row = page.locator("#history tr[data-kind=cli]", has_text="已完成")
    row.wait_for()
    assert "命令行索引" in row.inner_text()
    page.wait_for_selector("#status-indexing:has-text('否')")
    page.wait_for_selector("#status-photos:has-text('30')")
    assert page.is_enabled("#index-start")


def test_the_jobs_view_shows_type_times_and_counts_that_add_up(
    desktop_page: Page,
    server: Served,
    small_library: SmallLibrary,
) -> None:
    page = desktop_page
    count = len(small_library.photos)
    page.goto(server.url + "/#admin")
    enter_token(page, TOKEN)
    page.click("#index-start")
    page.wait_for_selector("#job[data-state=succeeded]")
    assert page.inner_text("#job-kind") == "增量索引"
    times = page.inner_text("#job-times")
    assert "开始于" in times and "已用时" in times
    scanned_note = page.inner_text("#job-counts tr[data-count=scanned] td.muted")
    assert scanned_note == f"= 新增 {count} + 未变 0 + 移动 0"
    described_note = page.inner_text("#job-counts tr[data-count=described] td.muted")
    assert described_note == f"需要描述 {count} 张 = 成功 {count} + 失败 0"
    page.wait_for_selector("#history tr[data-kind=incremental]")
    assert page.locator("#history tbody tr").count() == 1
    checks = len(run_checks(server.settings, probe=False))  # one line a check of peitu doctor
    wait_for(lambda: page.locator("#doctor li").count() == checks, "the checks to show", 60)
    assert page.locator("#doctor li[data-check=library].check-ok").count() == 1
    assert_only_chinese_messages(page)


def test_an_empty_index_points_to_the_index_tab_and_photos_are_found_during_the_first_index(
    desktop_page: Page,
    start_server: ServerFactory,
    make_settings: SettingsFactory,
    small_library: SmallLibrary,
    openai_server: FakeOpenAIServer,
    tmp_path: Path,
) -> None:
    page = desktop_page
    vision = vision_settings(openai_server, concurrency=1)
    served = _serve_to_the_page(
        page,
        start_server,
        make_settings(library=small_library.root, vision=vision, admin_token=TOKEN),
    )
    answer = search(page, "带孩子去海边玩水")
    assert answer["results"] == [] and [n["kind"] for n in answer["notes"]] == ["empty_index"]
    info = page.locator("#search-info")
    info.wait_for()
    assert "到「索引管理」点「开始索引」" in info.inner_text()
    assert (
        "peitu" not in info.inner_text() and "`" not in info.inner_text()
    )  # no CLI for a web user
    assert_only_chinese_messages(page)
    screenshot(page, "empty-index", tmp_path)
    page.click("#search-info button:has-text('去索引管理')")
    page.locator("#view-admin").wait_for()

    scenes = itertools.cycle(
        [
            "主体：海边的沙滩上，一个孩子在玩水",
            "主体：雪山脚下，一个人在滑雪",
            "主体：城市街道上人来人往",
        ]
    )
    openai_server.vision_fn = lambda _image: next(scenes)
    openai_server.set_mode("vision", delay_s=1.0)  # 30 photos one by one: ~30 s of indexing
    page.click("#index-start:has-text('开始索引')")
    with served.client() as client:

        def searchable_while_indexing() -> bool:
            status = client.get("/api/status").json()
            return bool(status["indexing"]) and status["photos"] >= 16

        wait_for(searchable_while_indexing, "16 photos searchable while the first index runs", 120)
        page.click("a[data-view=search]")
        answer = search(page, "带孩子去海边玩水")
        page.locator("#results .card").first.wait_for()
        assert answer["results"] and client.get("/api/status").json()["indexing"]
        openai_server.set_mode("vision", delay_s=0.0)
        wait_for(lambda: not client.get("/api/status").json()["indexing"], "the job's end", 120)


def test_an_error_clears_the_answer_of_the_search_before(
    desktop_page: Page, server: Served, small_library: SmallLibrary
) -> None:
    page = desktop_page
    _indexed(server)
    page.goto(server.url + "/")
    enter_token(page, TOKEN)
    search(page, small_library.photos[0].captions[4])
    page.locator("#results .card").first.wait_for()
    page.set_input_files(
        "#similar-file", files=[file_payload("说明.txt", "image/jpeg", b"this is no photo")]
    )
    page.locator("#search-error").wait_for()
    assert page.locator("#results .card").count() == 0  # not the last search's photos
    assert page.locator("#search-info").is_hidden() and page.locator("#search-empty").is_hidden()
    assert_only_chinese_messages(page)


def test_short_labels_on_a_phone_never_break_inside_a_word(
    phone_page: Page, server: Served, tmp_path: Path
) -> None:
    page = phone_page
    page.goto(server.url + "/")
    selectors = ".topbar label, .topbar button, .tabs a, #search-form .row label, button.primary"
    lines = page.eval_on_selector_all(
        selectors,
        """els => els.filter(e => e.offsetParent !== null).map(e => {
            const line = parseFloat(getComputedStyle(e).lineHeight) || 1.5 * parseFloat(getComputedStyle(e).fontSize);
            const text = [...e.childNodes].filter(n => n.nodeType === 3).map(n => n.textContent).join("").trim();
            const range = document.createRange(); range.selectNodeContents(e);
            const tops = new Set([...range.getClientRects()].map(r => Math.round(r.top)));
            return [text, tops.size, line];
        })""",
    )
    assert any(text == "管理令牌" for text, _, _ in lines)
    broken = [text for text, rows, _ in lines if text and rows > 1]
    screenshot(page, "phone-labels", tmp_path)
    assert broken == [], broken


def test_a_proxys_error_page_is_shown_in_the_servers_words(
    desktop_page: Page, server: Served
) -> None:
    """An answer without the server's `message` (a proxy in front of it answers) shows the line
    the server keeps for its status (`/messages.json`): the page keeps no copy of them."""
    page = desktop_page
    page.route(
        "**/api/recommend",
        lambda route: route.fulfill(
            status=507, body="<h1>507 Insufficient Storage</h1>", content_type="text/html"
        ),
    )
    page.goto(server.url + "/")
    enter_token(page, TOKEN)
    page.fill("#search-text", "海边的日落")
    page.click("#search-button")
    page.locator("#search-error").wait_for()
    assert page.locator("#search-error").inner_text() == message_for_status(507)
    assert_only_chinese_messages(page)
