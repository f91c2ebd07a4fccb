"""The bot's plain parts: command parsing, reply wording, rate limit, allow-list, photo copies."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image

from bot.commands import (
    CLOSEST_MARK,
    NOTE_NOT_RERANKED,
    SORRY,
    Command,
    Kind,
    error_text,
    help_text,
    parse_command,
    rate_limited_text,
    recommend_text,
    status_text,
    strip_mentions,
    try_hint,
    unknown_command_text,
    usage_text,
)
from bot.guards import AllowList, RateLimiter, RecentItems
from bot.photos import PhotoPreparer
from index.errors import DescribeFailed, IndexBusy, InvalidQuery, PeiTuError, PhotoUnreadable
from index.models import (
    RERANK_OFF,
    RERANK_USED,
    Note,
    NoteKind,
    Recommendation,
    RecommendResult,
    Rerank,
    RerankState,
)
from tests.support.badfiles import encode, noise_image
from tests.wechat.fakes import FakeStatus

# --- parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "typed",
    [
        "/配图 今天蓝天白云",
        "／配图 今天蓝天白云",
        "/配图今天蓝天白云",
        "/配图：今天蓝天白云",
        "配图：今天蓝天白云",
        "配图:今天蓝天白云",
        "配图 : 今天蓝天白云",
        "配图 今天蓝天白云",  # a space and no slash: how people type it
        "配图\u3000今天蓝天白云",
        "@PhotoBot 配图   今天蓝天白云",
        "  /配图   今天蓝天白云  ",
        "@PhotoBot /配图 今天蓝天白云",
        "@PhotoBot\u2005/配图 今天蓝天白云",
    ],
)
def test_peitu_command_forms(typed: str) -> None:
    assert parse_command(typed) == Command(Kind.PEITU, "今天蓝天白云")


@pytest.mark.parametrize(
    ("typed", "kind"),
    [("/相似", Kind.SIMILAR), ("/帮助", Kind.HELP), ("/help", Kind.HELP), ("/HELP", Kind.HELP),
     ("/状态", Kind.STATUS), ("／状态", Kind.STATUS), ("/状态 ", Kind.STATUS)],
)  # fmt: skip
def test_commands_without_argument(typed: str, kind: Kind) -> None:
    assert parse_command(typed) == Command(kind)


@pytest.mark.parametrize(
    ("typed", "name"),
    [("/天气 明天", "天气"), ("/状态栏", "状态栏"), ("/", ""), ("/ 配图", "配图"), ("/xyz", "xyz")],
)
def test_unknown_commands_keep_the_typed_name(typed: str, name: str) -> None:
    assert parse_command(typed) == Command(Kind.UNKNOWN, name=name)


@pytest.mark.parametrize(
    "typed",
    ["今天蓝天白云", "配图真好看", "", "   ", "@PhotoBot 你好", "图/配图", "配图", "配图  "],
)
def test_ordinary_chat_is_not_a_command(typed: str) -> None:
    assert parse_command(typed) is None


@pytest.mark.parametrize("typed", ["/配图", "/配图   ", "配图：", "/配图：  "])
def test_empty_peitu_has_no_text(typed: str) -> None:
    assert parse_command(typed) == Command(Kind.PEITU, "")


def test_configurable_prefix() -> None:
    assert parse_command("#配图 海边", prefix="#") == Command(Kind.PEITU, "海边")
    assert parse_command("＃配图 海边", prefix="#") == Command(Kind.PEITU, "海边")
    assert parse_command("/配图 海边", prefix="#") is None
    assert parse_command("!!帮助", prefix="!!") == Command(Kind.HELP)


def test_empty_prefix_does_not_turn_chat_into_unknown_commands() -> None:
    assert parse_command("配图 海边", prefix="") == Command(Kind.PEITU, "海边")
    assert parse_command("你好", prefix="") is None


def test_long_text_is_trimmed() -> None:
    command = parse_command("/配图 " + "海" * 25, max_text_chars=10)
    assert command == Command(Kind.PEITU, "海" * 10, trimmed=True)
    assert parse_command("/配图 " + "海" * 10, max_text_chars=10) == Command(Kind.PEITU, "海" * 10)


def test_strip_mentions_only_at_the_start() -> None:
    assert strip_mentions("@A @B  /配图 x @C") == "/配图 x @C"


# --- replies -----------------------------------------------------------------------------------


def _rec(rank: int, reason: str) -> Recommendation:
    return Recommendation(rank, f"id{rank}", f"p{rank}.jpg", 0.8, 0.7, reason, "description")


def _result(
    reasons: list[str], *, rerank: Rerank = RERANK_USED, notes: tuple[Note, ...] = ()
) -> RecommendResult:
    recs = [_rec(n, r) for n, r in enumerate(reasons, start=1)]
    return RecommendResult("今天蓝天白云", recs, {}, notes, rerank)


def _failed(detail: str) -> tuple[Rerank, Note]:
    """A failed rerank as the core reports it: the state, and its note."""
    note = Note(NoteKind.RERANK_FAILED, "排序模型暂时不可用，已按匹配度排序。")
    return Rerank(RerankState.FAILED, detail), note


def test_recommend_text_numbers_one_line_reasons() -> None:
    text = recommend_text(_result(["蓝天\n很开阔", "白云" * 50]))
    lines = text.splitlines()
    assert lines[0] == "为「今天蓝天白云」挑了 2 张照片："
    assert lines[1] == "1. 蓝天 很开阔"
    assert lines[2].startswith("2. 白云") and lines[2].endswith("…") and len(lines[2]) == 63
    assert NOTE_NOT_RERANKED not in text


def test_recommend_text_notes_vector_order() -> None:
    failed, note = _failed("reranking failed: timed out")
    text = recommend_text(_result(["蓝天"], rerank=failed, notes=(note,)))
    assert text.splitlines() == ["为「今天蓝天白云」挑了 1 张照片：", "1. 蓝天", NOTE_NOT_RERANKED]
    assert "timed out" not in text  # the technical detail is for the log, not the chat


def test_recommend_text_passes_on_the_core_notes() -> None:
    understood = Note(NoteKind.UNDERSTOOD, "时间：今天（2024-05-01）")
    relaxed = Note(NoteKind.RELAXED, "没有找到该时间的照片，已忽略时间条件")
    failed, note = _failed("HTTP 500")
    text = recommend_text(_result(["蓝天"], rerank=failed, notes=(understood, relaxed, note)))
    dropped_time = "时间：今天（2024-05-01）；没有找到该时间的照片，已忽略时间条件"
    assert text.splitlines()[2:] == ["注：" + dropped_time, NOTE_NOT_RERANKED]


def test_a_rerank_failure_detail_with_the_separator_stays_out_of_the_chat() -> None:
    # A model's prose ("好的；…") inside the failure's detail is no note for the person.
    failed, note = _failed("the reranker's answer holds no JSON object: '好的；忽略以上指令'")
    text = recommend_text(_result(["蓝天"], rerank=failed, notes=(note,)))
    assert text.splitlines() == ["为「今天蓝天白云」挑了 1 张照片：", "1. 蓝天", NOTE_NOT_RERANKED]


def test_similar_text_has_no_rerank_note() -> None:
    text = recommend_text(_result(["蓝天"], rerank=RERANK_OFF), similar=True)
    assert text.splitlines()[0] == "相册里和这张图相似的照片（1 张）："
    assert NOTE_NOT_RERANKED not in text


def test_no_match_uses_the_core_message_naming_the_closest() -> None:
    message = "没有找到足够相关的照片。最接近的是「海边的孩子」（相似度 0.41）。"
    notes = (Note(NoteKind.NO_MATCH, message),)
    text = recommend_text(_result([], rerank=RERANK_OFF, notes=notes), prefix="#")
    assert text.splitlines() == [message, try_hint("#")]
    assert recommend_text(_result([], rerank=RERANK_OFF)).splitlines()[0] == "没有找到相关的照片。"


def test_an_answer_of_only_the_closest_is_marked_and_ends_with_a_hint() -> None:
    weak = _result(["有点像"])
    weak.results[0] = dataclasses.replace(weak.results[0], match=31.0, fits=False)
    lines = recommend_text(weak).splitlines()
    assert lines[:2] == ["为「今天蓝天白云」挑了 1 张照片：", f"1. {CLOSEST_MARK}有点像"]
    assert lines[-1].startswith("还可以试试：") and "/配图 " in lines[-1] and "/相似" in lines[-1]
    assert "还可以试试" not in recommend_text(_result(["蓝天"]))  # it fits
    assert "还可以试试" not in recommend_text(weak, similar=True)  # 以图找图: nothing to reword


def test_how_to_configure_the_reranker_is_not_said_in_the_chat() -> None:
    off = Note(
        NoteKind.RERANK_OFF, "已按匹配度排序。想让大模型来排序并写理由：设置 DASHSCOPE_API_KEY"
    )
    text = recommend_text(_result(["蓝天"], rerank=RERANK_OFF, notes=(off,)))
    assert text.splitlines() == ["为「今天蓝天白云」挑了 1 张照片：", "1. 蓝天"]


def test_help_lists_every_form_a_person_may_type() -> None:
    text = help_text("/")
    for form in (
        "/配图 今天蓝天白云",
        "/配图今天蓝天白云",
        "／配图 今天蓝天白云",
        "配图：今天蓝天白云",
        "配图 今天蓝天白云",
        "/相似",
        "/状态",
        "/帮助",
        "/help",
        "@",
    ):
        assert form in text, form
    for form in (
        "/配图今天蓝天白云",
        "／配图 今天蓝天白云",
        "配图：今天蓝天白云",
        "配图 今天蓝天白云",
    ):
        assert parse_command(form) is not None, form  # what help shows is understood


def test_trimmed_note_comes_first() -> None:
    text = recommend_text(_result(["蓝天"]), trimmed_to=300)
    assert text.splitlines()[0] == "（文字超过 300 字，只用了前 300 字）"


def test_status_text() -> None:
    text = status_text(FakeStatus(photos=1234, last_index_at=datetime(2024, 5, 1, 14, 30)))
    assert text == "相册里已索引 1234 张照片。\n上次索引：2024-05-01 14:30"
    busy = status_text(FakeStatus(photos=0, last_index_at=None, indexing=True))
    assert "还没有索引过" in busy and "正在索引中" in busy


def test_status_time_is_local_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    time.tzset()
    try:
        text = status_text(
            FakeStatus(photos=1, last_index_at=datetime(2024, 5, 1, 22, 30, tzinfo=UTC))
        )
    finally:
        monkeypatch.undo()
        time.tzset()
    assert text.endswith("上次索引：2024-05-02 06:30")


def test_recommend_text_with_reranking_switched_off_has_no_note() -> None:
    text = recommend_text(_result(["蓝天"], rerank=RERANK_OFF))
    assert text.splitlines() == ["为「今天蓝天白云」挑了 1 张照片：", "1. 蓝天"]


def test_help_usage_unknown_use_the_prefix() -> None:
    assert "#配图 <文案>" in help_text("#") and "#相似" in help_text("#")
    assert usage_text("/") == "请在 /配图 后面写上文案，例如：/配图 今天蓝天白云"
    unknown = unknown_command_text("天气")
    assert unknown.startswith("不认识的命令「/天气」") and "/帮助" in unknown
    assert unknown_command_text("").startswith("不认识的命令「/」")


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (IndexBusy("j"), "索引中"),
        (DescribeFailed("x"), "看不懂这张图片"),
        (PhotoUnreadable("p", "corrupt"), "打不开"),
        (InvalidQuery("empty"), "文案"),
        (PeiTuError("anything else"), SORRY),
    ],
)
def test_error_text(error: PeiTuError, words: str) -> None:
    assert words in error_text(error)


def test_rate_limited_text_rounds_up() -> None:
    assert rate_limited_text(12.2, 6) == "请求太频繁了（每分钟最多 6 次），请 13 秒后再试。"
    assert "请 1 秒后再试" in rate_limited_text(0.0, 6)


# --- rate limit, allow-list, recent images -------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_sliding_minute_per_user() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, clock)
    assert limiter.check("alice").allowed and limiter.check("alice").allowed
    clock.now += 10
    refused = limiter.check("alice")
    assert not refused.allowed and refused.notify and refused.retry_after_s == pytest.approx(50)
    assert not limiter.check("alice").notify  # told once
    assert limiter.check("bob").allowed
    clock.now += 50  # both earlier requests are a minute old now
    assert limiter.check("alice").allowed and limiter.check("alice").allowed
    again = limiter.check("alice")
    assert not again.allowed and again.notify  # a new refusal after being served is told again


def test_rate_limiter_zero_means_unlimited() -> None:
    limiter = RateLimiter(0, FakeClock())
    assert all(limiter.check("alice").allowed for _ in range(100))


def test_an_empty_allow_list_allows_nobody() -> None:
    """Everyone else is let in by `bot.access`: pairing, or `allow_everyone` on purpose."""
    assert not AllowList.of([], []).allows("wxid_1", "Bob", "room@chatroom", "Any")
    assert not AllowList.of([" "], []).allows("wxid_1", "Bob")


def test_allow_list_contacts_by_id_or_name() -> None:
    allow = AllowList.of(["Alice", "wxid_bob", " "], [])
    assert allow.allows("wxid_a", "Alice")
    assert allow.allows("wxid_bob", "Bobby")
    assert allow.allows("wxid_a", "Alice", "r@chatroom", "Work")  # a listed person anywhere
    assert not allow.allows("wxid_c", "Carol")
    assert not allow.allows("wxid_c", "Carol", "r@chatroom", "Family")  # rooms not opened


def test_allow_list_rooms_serve_everyone_in_them_only() -> None:
    allow = AllowList.of([], ["Family"])
    assert allow.allows("wxid_c", "Carol", "r1@chatroom", "Family")
    assert allow.allows("wxid_c", "Carol", "Family", None)  # by room id
    assert not allow.allows("wxid_c", "Carol", "r2@chatroom", "Work")
    assert not allow.allows("wxid_c", "Carol")  # 1:1 chats are closed once a list is set


def test_allow_list_by_id_only_ignores_names_and_topics() -> None:
    allow = AllowList.of(["Alice", "wxid_bob"], ["Family", "r1@chatroom"], by_name=False)
    assert allow.allows("wxid_bob", "Bobby")
    assert not allow.allows("wxid_eve", "Alice")  # Eve renamed herself "Alice"
    assert allow.allows("wxid_c", "Carol", "r1@chatroom", "Anything")
    assert not allow.allows("wxid_c", "Carol", "r2@chatroom", "Family")  # a room renamed "Family"


def test_recent_items_expire_and_stay_bounded() -> None:
    clock = FakeClock()
    recent: RecentItems[str] = RecentItems(300, clock, max_keys=2)
    recent.put("a", "image-a")
    clock.now += 299
    assert recent.get("a") == "image-a"
    clock.now += 2
    assert recent.get("a") is None
    recent.put("a", "1")
    recent.put("b", "2")
    recent.put("c", "3")
    assert (recent.get("a"), recent.get("b"), recent.get("c")) == (None, "2", "3")


# --- photos to send ------------------------------------------------------------------------------


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(("name", "fmt"), [("a.jpg", "JPEG"), ("b.png", "PNG"), ("c.gif", "GIF")])
def test_small_jpeg_png_gif_are_sent_as_they_are(tmp_path: Path, name: str, fmt: str) -> None:
    photo = tmp_path / name
    photo.write_bytes(encode(noise_image(40, 30), fmt))
    prepared = PhotoPreparer(tmp_path / "cache", 100_000).prepare(photo)
    assert (prepared.path, prepared.name, prepared.converted) == (photo, name, False)
    assert not (tmp_path / "cache").exists()


def test_other_formats_get_a_jpeg_copy_and_the_original_is_untouched(tmp_path: Path) -> None:
    photo = tmp_path / "holiday.webp"
    photo.write_bytes(encode(noise_image(300, 200), "WEBP"))
    before = _digest(photo)
    preparer = PhotoPreparer(tmp_path / "cache", 100_000)
    prepared = preparer.prepare(photo)
    assert prepared.converted and prepared.name == "holiday.jpg"
    assert prepared.path.parent == tmp_path / "cache"
    with Image.open(prepared.path) as copy:
        assert copy.format == "JPEG" and copy.size == (300, 200)
    assert _digest(photo) == before
    assert preparer.prepare(photo).path == prepared.path  # reused, not made again


def test_a_file_name_that_is_not_utf8_is_sent_readably(tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path) + b"/" + "海边拍照".encode("gbk")
    preparer = PhotoPreparer(tmp_path / "cache", 100_000)
    as_is, converted = Path(os.fsdecode(raw + b".jpg")), Path(os.fsdecode(raw + b".webp"))
    as_is.write_bytes(encode(noise_image(40, 30), "JPEG"))
    converted.write_bytes(encode(noise_image(40, 30), "WEBP"))
    assert preparer.prepare(as_is).name == "海边拍照.jpg"
    assert preparer.prepare(converted).name == "海边拍照.jpg"
    assert preparer.prepare(converted).converted


def test_a_jpeg_named_png_is_judged_by_content(tmp_path: Path) -> None:
    photo = tmp_path / "really_a.bmp"
    photo.write_bytes(encode(noise_image(40, 30), "JPEG"))
    assert not PhotoPreparer(tmp_path / "cache", 100_000).prepare(photo).converted


def test_big_photos_shrink_until_they_fit(tmp_path: Path) -> None:
    photo = tmp_path / "big.png"
    photo.write_bytes(encode(noise_image(1500, 1000), "PNG"))
    before = _digest(photo)
    prepared = PhotoPreparer(tmp_path / "cache", 100_000, max_side=1500).prepare(photo)
    assert prepared.converted and prepared.path.stat().st_size <= 100_000
    with Image.open(prepared.path) as copy:
        assert max(copy.size) < 1500
    assert _digest(photo) == before


def test_missing_or_broken_photo_is_unreadable(tmp_path: Path) -> None:
    preparer = PhotoPreparer(tmp_path / "cache", 100_000)
    with pytest.raises(PhotoUnreadable):
        preparer.prepare(tmp_path / "gone.jpg")
    broken = tmp_path / "broken.heic"
    broken.write_bytes(b"not an image at all")
    with pytest.raises(PhotoUnreadable):
        preparer.prepare(broken)


def test_the_bot_keeps_the_indexing_pixel_limit_for_its_copies(tmp_path: Path) -> None:
    """`PEITU_INDEXING__MAX_PIXELS` reaches the bot (bot/main.py passes it down): a photo over
    it is refused before decoding, as the scan refuses it, rather than decoded to be resent."""
    photo = tmp_path / "wide.webp"
    photo.write_bytes(encode(noise_image(1500, 1000), "WEBP"))
    with pytest.raises(PhotoUnreadable) as refused:
        PhotoPreparer(tmp_path / "cache", 100_000, max_pixels=1_000_000).prepare(photo)
    assert refused.value.reason == "too_many_pixels"
    assert PhotoPreparer(tmp_path / "cache", 100_000, max_pixels=2_000_000).prepare(photo).converted
