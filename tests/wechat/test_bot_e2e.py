"""The bot end to end: real gateway, real python-wechaty client, real core on 30 real photos.

Tests that ask the core run twice (`bot_finder`): with the core in the bot's own process, and
with the bot asking a real PeiTu server over HTTP (`PEITU_BOT__SERVER_URL`); the replies must
be the same. Rerank and vision go through the real `openai` client to the local fake OpenAI server. The
photos a reply carries are checked by SHA-256 against the files the core recommends.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from PIL import Image

from bot.commands import CLOSEST_MARK, NOTE_NOT_RERANKED, photo_hint_text, try_hint
from bot.handler import Outcome
from bot.ports import PhotoFinder
from index.models import RERANK_OFF, NoteKind, RecommendResult, RerankState
from index.search.embed import SentenceTransformerEmbedder
from index.service import PeiTu
from index.wiring import build_app
from tests.support.openai_server import FakeOpenAIServer
from tests.wechat.conftest import IndexedLibrary, StartWechat, core_settings
from tests.wechat.harness import Event, WechatHarness

pytestmark = pytest.mark.e2e

SEA = "带孩子去海边玩水，好开心"


def fingerprint(path: Path) -> tuple[str, int, str]:
    data = path.read_bytes()
    return path.name, len(data), hashlib.sha256(data).hexdigest()


def expected_files(peitu: PeiTu, result: RecommendResult) -> list[tuple[str, int, str]]:
    paths = [peitu.photo_path(r.photo_id) for r in result.results]
    return [fingerprint(path) for path in paths if path is not None]


def sent_files(files: list[Event]) -> list[tuple[str, int, str]]:
    return [(f["fileName"], f["bytes"], f["sha256"]) for f in files]


def numbered_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line[:1].isdigit()]


def assert_answer(chat: WechatHarness, peitu: PeiTu, query: str) -> tuple[Event, list[Event]]:
    """The reply to `query` names and sends exactly the photos the core recommends, in order."""
    expected = peitu.recommend(query)
    assert expected.results, "the query should find photos in the small library"
    text, files = chat.reply(photos=len(expected.results))
    assert sent_files(files) == expected_files(peitu, expected)
    lines = numbered_lines(text["text"])
    assert [line.split(". ", 1)[1] for line in lines] == [r.reason for r in expected.results]
    assert all(f["mediaType"] == "image/jpeg" for f in files)
    assert chat.next_outcome() is Outcome.REPLIED
    return text, files


def test_peitu_in_private_chat(
    start_wechat: StartWechat, bot_finder: PhotoFinder, peitu: PeiTu
) -> None:
    chat = start_wechat(bot_finder)
    chat.say(f"/配图 {SEA}")
    text, _ = assert_answer(chat, peitu, SEA)
    assert text["to"] == chat.ids["aliceId"]
    assert f"为「{SEA}」" in text["text"] and NOTE_NOT_RERANKED not in text["text"]


def test_peitu_in_room_with_mention(
    start_wechat: StartWechat, bot_finder: PhotoFinder, peitu: PeiTu
) -> None:
    chat = start_wechat(bot_finder)
    chat.say(f"/配图 {SEA}", room=True, mention=True)
    text, files = assert_answer(chat, peitu, SEA)
    assert text["to"] == chat.ids["roomId"] and all(f["to"] == chat.ids["roomId"] for f in files)


@pytest.mark.parametrize("typed", ["／配图 {q}", "配图：{q}", "配图:{q}", "/配图{q}"])
def test_other_ways_to_write_the_command(
    start_wechat: StartWechat, bot_finder: PhotoFinder, peitu: PeiTu, typed: str
) -> None:
    chat = start_wechat(bot_finder)
    chat.say(typed.format(q=SEA))
    assert_answer(chat, peitu, SEA)


def test_room_message_without_mention_gets_no_reply(
    start_wechat: StartWechat, peitu: PeiTu
) -> None:
    chat = start_wechat(peitu)
    chat.say(f"/配图 {SEA}", room=True)
    assert chat.next_outcome() is Outcome.IGNORED
    chat.say("/帮助")  # a probe: the next thing the bot says is the answer to it
    text, _ = chat.reply()
    assert text["to"] == chat.ids["aliceId"] and "帮助" in text["text"]
    assert chat.bot_said() == []


def test_room_without_mention_when_mention_not_required(
    start_wechat: StartWechat, peitu: PeiTu
) -> None:
    chat = start_wechat(peitu, group_requires_mention=False)
    chat.say(f"/配图 {SEA}", room=True)
    text, _ = assert_answer(chat, peitu, SEA)
    assert text["to"] == chat.ids["roomId"]


def test_similar_after_an_incoming_image(
    start_wechat: StartWechat,
    bot_finder: PhotoFinder,
    peitu: PeiTu,
    indexed_library: IndexedLibrary,
    openai_server: FakeOpenAIServer,
) -> None:
    photo = indexed_library.library.photos[1]  # boys playing at the seaside
    openai_server.vision_fn = lambda _image: "".join(photo.captions[:4])
    image = indexed_library.library.root / photo.rel_path
    expected = peitu.similar_to_image(image.read_bytes())
    chat = start_wechat(bot_finder)
    chat.say(file=image)
    assert chat.next_outcome() is Outcome.IMAGE_KEPT
    hint, _ = chat.reply()  # a photo in a 1:1 chat gets one line saying what to do with it
    assert hint["text"] == photo_hint_text("/") and hint["to"] == chat.ids["aliceId"]
    chat.say("/相似")
    text, files = chat.reply(photos=len(expected.results))
    assert "相似的照片" in text["text"]
    assert sent_files(files) == expected_files(peitu, expected)
    assert fingerprint(image) not in sent_files(files)  # not the very photo it was sent
    assert openai_server.requests_of("vision") == []  # found by its pixels, not described


def test_peitu_typed_with_a_space_and_no_slash(
    start_wechat: StartWechat, bot_finder: PhotoFinder, peitu: PeiTu
) -> None:
    expected = peitu.recommend(SEA)
    chat = start_wechat(bot_finder)
    chat.say(f"配图 {SEA}")
    text, files = chat.reply(photos=len(expected.results))
    assert sent_files(files) == expected_files(peitu, expected)
    assert numbered_lines(text["text"]) and chat.next_outcome() is Outcome.REPLIED


def test_similar_to_a_small_file_of_a_huge_picture_is_a_polite_no(
    start_wechat: StartWechat, bot_finder: PhotoFinder, tmp_path: Path
) -> None:
    """The red team's 136 KB grey PNG of 10,900 x 10,900 sent to /相似: refused before it is
    decoded (in both modes), with a reply that says why, and no photo."""
    huge = tmp_path / "grey.png"
    Image.new("L", (10_900, 10_900), 128).save(huge, optimize=True)
    chat = start_wechat(bot_finder)
    chat.say(file=huge)
    assert chat.next_outcome() is Outcome.IMAGE_KEPT
    assert chat.reply()[0]["text"] == photo_hint_text("/")  # kept: told how to use it
    chat.say("/相似")
    text, _ = chat.reply()
    assert "太大" in text["text"]
    assert chat.next_outcome() is Outcome.FAILED
    assert not any(event.get("fileName") for event in chat.bot_said())


def test_similar_in_room_after_image_and_mention(
    start_wechat: StartWechat,
    bot_finder: PhotoFinder,
    peitu: PeiTu,
    indexed_library: IndexedLibrary,
    openai_server: FakeOpenAIServer,
) -> None:
    photo = indexed_library.library.photos[1]
    openai_server.vision_fn = lambda _image: "".join(photo.captions[:4])
    chat = start_wechat(bot_finder)
    chat.say(file=indexed_library.library.root / photo.rel_path, room=True)
    assert chat.next_outcome() is Outcome.IMAGE_KEPT
    chat.say("/相似", room=True, mention=True)
    text, files = chat.reply(photos=1)
    assert text["to"] == chat.ids["roomId"] and files[0]["to"] == chat.ids["roomId"]


def test_similar_without_an_image_asks_for_one(start_wechat: StartWechat, peitu: PeiTu) -> None:
    chat = start_wechat(peitu)
    chat.say("/相似")
    text, _ = chat.reply()
    assert "请先发一张图片" in text["text"]


def test_similar_when_the_vision_model_fails(
    start_wechat: StartWechat,
    bot_finder: PhotoFinder,
    indexed_library: IndexedLibrary,
    openai_server: FakeOpenAIServer,
) -> None:
    """/相似 searches by pixels: a vision model that is down does not matter."""
    openai_server.set_mode("vision", fail_status=500, fail_times=100)
    chat = start_wechat(bot_finder)
    chat.say(file=indexed_library.library.root / indexed_library.library.photos[0].rel_path)
    assert chat.reply()[0]["text"] == photo_hint_text("/")
    chat.say("/相似")
    text, files = chat.reply(photos=5)
    assert "相似的照片" in text["text"] and len(files) == 5


def test_similar_by_description_when_the_vision_model_fails(
    start_wechat: StartWechat,
    indexed_library: IndexedLibrary,
    openai_server: FakeOpenAIServer,
    embedder: SentenceTransformerEmbedder,
    tmp_path: Path,
) -> None:
    """With the visual index off the photo is described first, and that can fail."""
    settings = core_settings(indexed_library, openai_server.base_url, visual={"backend": "off"})
    peitu = build_app(settings, embedder=embedder)
    openai_server.set_mode("vision", fail_status=500, fail_times=100)
    chat = start_wechat(peitu)
    new_image = tmp_path / "new.jpg"  # not in the library: no stored description stands in
    Image.new("RGB", (64, 48), (200, 30, 30)).save(new_image)
    chat.say(file=new_image)
    assert chat.reply()[0]["text"] == photo_hint_text("/")
    chat.say("/相似")
    text, _ = chat.reply()
    peitu.close()
    assert "看不懂这张图片" in text["text"]
    assert chat.bot_said() == []


def test_llm_timeout_still_gives_an_answer_with_a_note(
    start_wechat: StartWechat,
    bot_finder: PhotoFinder,
    peitu: PeiTu,
    openai_server: FakeOpenAIServer,
) -> None:
    openai_server.set_mode("rerank", delay_s=3.0)  # the rerank timeout is 1.5 s
    chat = start_wechat(bot_finder)
    chat.say(f"/配图 {SEA}")
    text, files = chat.reply(photos=1)
    assert NOTE_NOT_RERANKED in text["text"]
    assert numbered_lines(text["text"]) and files[0]["fileName"].endswith(".jpg")


def reply_lines(text: str, result: RecommendResult, *after: str) -> list[str]:
    """The reply the bot gives for `result`: a title, one line per photo (the closest marked),
    then the lines `after` (notes), and the hint when only the closest could be shown."""
    title = f"为「{text}」挑了 {len(result.results)} 张照片："
    photos = [
        f"{n}. {'' if r.fits else CLOSEST_MARK}{r.reason}"
        for n, r in enumerate(result.results, start=1)
    ]
    weak = not any(r.fits for r in result.results)
    return [title, *photos, *after, *([try_hint()] if weak else [])]


def test_replies_read_the_rerank_state_and_notes_and_keep_their_words(
    start_wechat: StartWechat,
    bot_finder: PhotoFinder,
    peitu: PeiTu,
    openai_server: FakeOpenAIServer,
) -> None:
    chat = start_wechat(bot_finder)

    used = peitu.recommend(SEA)
    assert used.rerank.state is RerankState.USED and not used.notes
    chat.say(f"/配图 {SEA}")
    text, _ = chat.reply(photos=len(used.results))
    assert text["text"].splitlines() == reply_lines(SEA, used)

    # Garbage from the LLM, with the separator the notes are joined by in its prose.
    openai_server.rerank_fn = lambda _block: "好的；以下是评分"
    failed = peitu.recommend(SEA)
    assert failed.rerank.state is RerankState.FAILED
    assert failed.rerank.reason and "no JSON object" in failed.rerank.reason
    chat.say(f"/配图 {SEA}")
    text, _ = chat.reply(photos=len(failed.results))
    assert text["text"].splitlines() == reply_lines(SEA, failed, NOTE_NOT_RERANKED)
    openai_server.rerank_fn = None

    summer = "去年夏天带孩子去海边玩水"  # the library's photos have no dates
    context = peitu.recommend(summer)
    assert context.results and context.notes == ()  # the time changed nothing: nothing said
    chat.say(f"/配图 {summer}")
    text, _ = chat.reply(photos=len(context.results))
    assert text["text"].splitlines() == reply_lines(summer, context)
    assert "去年夏天" not in "".join(text["text"].splitlines()[1:])

    mars = "火星基地的机器人"
    nothing = peitu.recommend(mars)
    assert nothing.nothing_fits and [n.kind for n in nothing.notes] == [NoteKind.NOTHING_FITS]
    chat.say(f"/配图 {mars}")
    text, _ = chat.reply()
    ask_closest = "想看最接近的照片，请在文案前加“?”：/配图? 文案"
    assert text["text"].splitlines() == [nothing.notes[0].text, ask_closest]


def test_with_reranking_off_the_reply_has_no_note(
    start_wechat: StartWechat,
    indexed_library: IndexedLibrary,
    openai_server: FakeOpenAIServer,
    embedder: SentenceTransformerEmbedder,
) -> None:
    settings = core_settings(indexed_library, openai_server.base_url, rerank={"enabled": False})
    peitu = build_app(settings, embedder=embedder)
    try:
        off = peitu.recommend(SEA)
        assert off.rerank == RERANK_OFF and off.results
        chat = start_wechat(peitu)
        chat.say(f"/配图 {SEA}")
        text, _ = chat.reply(photos=len(off.results))
    finally:
        peitu.close()
    assert text["text"].splitlines() == reply_lines(SEA, off)
    assert openai_server.calls["rerank"] == 0


def test_over_the_rate_limit_is_told_once(
    start_wechat: StartWechat, bot_finder: PhotoFinder, peitu: PeiTu
) -> None:
    chat = start_wechat(bot_finder, rate_limit_per_minute=2)
    for _ in range(2):
        chat.say(f"/配图 {SEA}")
        chat.reply(photos=1)
        assert chat.next_outcome() is Outcome.REPLIED
        chat.bot_said()  # the remaining photos
    chat.say(f"/配图 {SEA}")
    text, _ = chat.reply()
    assert "请求太频繁" in text["text"] and "每分钟最多 2 次" in text["text"]
    assert chat.next_outcome() is Outcome.RATE_LIMITED
    chat.say(f"/配图 {SEA}")  # refused again, silently this time
    assert chat.next_outcome() is Outcome.RATE_LIMITED
    chat.say("/帮助", sender="Bob")  # others are not limited
    text, _ = chat.reply()
    assert "帮助" in text["text"] and text["to"] != chat.ids["aliceId"]


def test_not_on_the_allow_list_gets_nothing(
    start_wechat: StartWechat, bot_finder: PhotoFinder, peitu: PeiTu
) -> None:
    chat = start_wechat(bot_finder, allow_contacts=["Alice"])
    chat.say(f"/配图 {SEA}", sender="Bob")
    assert chat.next_outcome() is Outcome.NOT_ALLOWED
    polite, photos = chat.reply()  # one polite line, no photo
    assert "私人的" in polite["text"] and polite["to"] == chat.ids["bobId"] and photos == []
    chat.say(f"/配图 {SEA}", sender="Bob", room=True, mention=True)
    assert chat.next_outcome() is Outcome.NOT_ALLOWED  # told once: nothing more
    chat.say("/帮助")
    text, _ = chat.reply()
    assert text["to"] == chat.ids["aliceId"]
    assert chat.bot_said() == []


def test_the_bots_own_messages_are_never_answered(start_wechat: StartWechat, peitu: PeiTu) -> None:
    chat = start_wechat(peitu)
    chat.say(f"/配图 {SEA}", as_bot=True)  # e.g. typed on the account's phone
    chat.say(f"/配图 {SEA}", as_bot=True, room=True, mention=True)
    for _ in range(2):
        assert chat.own_messages.get(timeout=60) is Outcome.OWN_MESSAGE
    chat.say("/帮助")
    assert chat.next_outcome() is Outcome.REPLIED  # the first message from a person
    said = chat.bot_said()  # the two messages themselves, then the one reply to Alice
    assert [e.get("text", "").endswith(f"/配图 {SEA}") for e in said] == [True, True, False]
    assert "/配图" in said[-1]["text"] and said[-1]["to"] == chat.ids["aliceId"]
    assert not any(e.get("fileName") for e in said)


def test_allowed_room_serves_everyone_in_it(start_wechat: StartWechat, peitu: PeiTu) -> None:
    chat = start_wechat(peitu, allow_rooms=["Family"])
    chat.say("/帮助", sender="Bob")
    assert chat.next_outcome() is Outcome.NOT_ALLOWED
    assert "私人的" in chat.reply()[0]["text"]
    chat.say("/帮助", sender="Bob", room=True, mention=True)
    text, _ = chat.reply()
    assert text["to"] == chat.ids["roomId"]


def test_help_status_unknown_and_empty(
    start_wechat: StartWechat, bot_finder: PhotoFinder, peitu: PeiTu
) -> None:
    chat = start_wechat(bot_finder)
    chat.say("/帮助")
    assert "/相似" in chat.reply()[0]["text"]
    chat.say("/状态")
    status = chat.reply()[0]["text"]
    assert "已索引 30 张照片" in status and "上次索引：20" in status
    chat.say("/天气 明天")
    unknown = chat.reply()[0]["text"]
    assert "不认识的命令「/天气」" in unknown and "/配图 <文案>" in unknown
    chat.say("/配图")
    assert "请在 /配图 后面写上文案" in chat.reply()[0]["text"]
    chat.say("/配图   ")
    assert "请在 /配图 后面写上文案" in chat.reply()[0]["text"]


def test_long_text_is_trimmed_and_says_so(
    start_wechat: StartWechat, bot_finder: PhotoFinder, peitu: PeiTu
) -> None:
    chat = start_wechat(bot_finder, max_text_chars=20)
    chat.say("/配图 " + SEA * 10)
    text, _ = chat.reply(photos=1)
    assert "文字超过 20 字，只用了前 20 字" in text["text"]
    assert f"为「{(SEA * 2)[:20]}」" in text["text"]


def test_custom_prefix(start_wechat: StartWechat, peitu: PeiTu) -> None:
    chat = start_wechat(peitu, command_prefix="#")
    chat.say("/帮助")
    assert chat.next_outcome() is Outcome.IGNORED
    chat.say("#帮助")
    assert "#配图 <文案>" in chat.reply()[0]["text"]
