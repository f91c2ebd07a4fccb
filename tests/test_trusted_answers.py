"""Answers a user can trust (issue 27), on real eval descriptions through the real recommend
path, with the default settings and no API key, as a new user has them.

The library: 240 captioned photos of ../shared/eval plus every photo whose captions 1–4 name
distressing content (跳楼, 流血, 受伤, 裸体 …), described by captions 1–4 (the `rich`
protocol of `peitu eval`). The posts: the issue's, and the dated 朋友圈-style dev posts of
bench/data/dev_posts.jsonl. Read as a person reads them: the order, the 匹配度, the words.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.handler import MessageHandler, Outcome
from bot.photos import PhotoPreparer
from config import Settings, load_settings
from config.settings import ChatSettings
from index.models import NoteKind, RecommendResult, RerankState
from index.ranking.social import DistressingWords
from index.search.embed import SentenceTransformerEmbedder
from index.service import PeiTu
from index.wiring import build_app
from tests.support.core_fixtures import EVAL_DIR, REPO, EvalPhoto, read_eval_captions
from tests.support.openai_server import FakeOpenAIServer
from tests.wechat.test_handler import FakeMessage

ISSUE_POSTS = (
    "周日爬山，累但是值得",
    "老爸生日，一家人一起吃饭",
    "冬天第一场雪",
    "骑单车环湖",
    "一个人的旅行，走走停停",
    "今天好累",
    "今天股票又跌了",
    "周末带娃去游乐场",
)
DEV_POSTS = tuple(
    json.loads(line)["text"]
    for line in (REPO / "bench" / "data" / "dev_posts.jsonl").read_text("utf-8").splitlines()
    if line.startswith("{")
)
# What a person must never read: an address, an exception, the machinery's English or names.
_MACHINE_WORDS = re.compile(r"https?:|failed|error|rerank|qwen|dashscope|model|\(|\)", re.I)


def no_key_settings(root: Path, m3e_path: Path, **overrides: object) -> Settings:
    """The defaults a new user runs with: reranking on, DashScope, no key anywhere."""
    with pytest.MonkeyPatch.context() as env:
        env.delenv("DASHSCOPE_API_KEY", raising=False)
        env.delenv("PEITU_RERANK__API_KEY", raising=False)
        settings = load_settings(
            library=root / "photos",
            data_dir=root / "data",
            embedding={"model": str(m3e_path)},
            **overrides,
        )
    assert settings.rerank.enabled and settings.rerank.key_missing
    return settings


def write_library(root: Path, photos: list[EvalPhoto], describe: dict[str, str]) -> Path:
    """Copies of the photos in root/photos and their sidecar descriptions; the sidecar."""
    (root / "photos").mkdir(parents=True, exist_ok=True)
    lines = []
    for photo in photos:
        shutil.copyfile(EVAL_DIR / "images" / photo.rel_path, root / "photos" / photo.rel_path)
        description = describe.get(photo.rel_path) or "".join(photo.captions[:4])
        lines.append(json.dumps({"image": photo.rel_path, "description": description}))
    sidecar = root / "descriptions.jsonl"
    sidecar.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return sidecar


def distressing_photos(photos: list[EvalPhoto]) -> list[EvalPhoto]:
    words = DistressingWords.read()
    return [p for p in photos if words.named_in("".join(p.captions[:4])) is not None]


@pytest.fixture(scope="module")
def captioned(
    tmp_path_factory: pytest.TempPathFactory, m3e_path: Path, embedder: SentenceTransformerEmbedder
) -> Iterator[PeiTu]:
    root = tmp_path_factory.mktemp("captioned")
    everything = read_eval_captions()
    photos = everything[:240] + [
        p for p in distressing_photos(everything) if p not in everything[:240]
    ]
    sidecar = write_library(root, photos, {})
    app = build_app(no_key_settings(root, m3e_path), descriptions=sidecar, embedder=embedder)
    assert app.index().embedded == len(photos)
    yield app
    app.close()


def shown_texts(result: RecommendResult) -> list[str]:
    return [note.text for note in result.notes] + [r.reason for r in result.results]


@pytest.mark.parametrize("closest", [False, True])
def test_every_answer_is_in_the_order_of_the_match_it_shows(
    captioned: PeiTu, closest: bool
) -> None:
    for text in ISSUE_POSTS + DEV_POSTS:
        result = captioned.recommend(text, closest=closest)
        shown = [round(r.match) for r in result.results]
        assert shown == sorted(shown, reverse=True), (text, shown)
        assert all(r.score == pytest.approx(r.match / 100, abs=1e-3) for r in result.results)
        assert [r.rank for r in result.results] == list(range(1, len(shown) + 1))


def test_a_plain_answer_holds_only_photos_that_fit_and_nothing_fits_exactly_when_none_does(
    captioned: PeiTu,
) -> None:
    answered = 0
    for text in ISSUE_POSTS + DEV_POSTS:
        plain = captioned.recommend(text)
        assert all(r.fits and r.match >= 50 for r in plain.results), text
        assert plain.nothing_fits == (not plain.results), text
        closest = captioned.recommend(text, closest=True)
        fits = [r.fits for r in closest.results]
        assert fits == sorted(fits, reverse=True), text  # the ones that fit come first
        assert [r.photo_id for r in closest.results if r.fits] == [
            r.photo_id for r in plain.results
        ][: len([f for f in fits if f])], text
        assert all(r.match < 50 for r in closest.results if not r.fits), text
        said_closest = NoteKind.CLOSEST in {n.kind for n in closest.notes}
        assert said_closest == (not any(fits)), text
        answered += bool(plain.results)
    assert answered >= 0.8 * len(DEV_POSTS)


def test_one_character_words_never_make_a_fit(captioned: PeiTu) -> None:
    """一个人的旅行，走走停停: 人 and 走 are in a third of the descriptions; a photo they alone
    match (kids on a trampoline, a man in a crop top) is not offered."""
    weak = {"人", "走", "停"}
    for text in ("一个人的旅行，走走停停", "想念一个人", "今天走了好多路"):
        for r in captioned.recommend(text).results:
            named = set(re.findall(r"「(.+?)」", r.reason))
            assert not named or not named <= weak, (text, r.reason)
    offdomain = [line for line in (EVAL_DIR / "offdomain_dev.txt").read_text("utf-8").split()]
    nothing = [t for t in offdomain if captioned.recommend(t).nothing_fits]
    assert len(nothing) >= 0.75 * len(offdomain), set(offdomain) - set(nothing)


def test_without_a_key_rerank_is_off_and_one_calm_chinese_note_says_how_to_turn_it_on(
    captioned: PeiTu,
) -> None:
    result = captioned.recommend("冬天第一场雪")
    assert result.results and result.rerank.state is RerankState.OFF
    assert [n.kind for n in result.notes] == [NoteKind.RERANK_OFF]
    note = result.notes[0].text
    assert "DASHSCOPE_API_KEY" in note and "匹配度" in note
    assert not re.search(r"https?:|failed|error|qwen", note, re.I)


def test_words_for_people_and_a_time_note_only_when_it_changed_the_answer(
    captioned: PeiTu,
) -> None:
    """The eval photos carry no date: 今天 / 周末 change nothing, so nothing is said about
    them; every note and reason is Chinese without addresses or machinery."""
    for text in ("今天冬天第一场雪", "周末带狗狗去海边玩", "今天股票又跌了", "asdfghjkl"):
        for closest in (False, True):
            result = captioned.recommend(text, closest=closest)
            kinds = {n.kind for n in result.notes}
            assert not kinds & {NoteKind.TIME_PLACE, NoteKind.UNDERSTOOD}, (text, result.notes)
            for line in shown_texts(result):
                if not line.startswith("已按匹配度排序"):  # the note naming the setting
                    assert not _MACHINE_WORDS.search(line), (text, line)
                assert re.search(r"[\u4e00-\u9fff]", line), line
            if not result.results:
                assert result.nothing_fits and "已显示其他照片" not in (result.message or "")


def test_a_distressing_photo_never_leads_an_unrelated_answer_even_the_closest(
    captioned: PeiTu, tmp_path: Path
) -> None:
    """ "今天股票又跌了": the closest description is "正在跳楼的人"; it is not offered, through
    the bot's `/配图?` (the closest on request) either. A post that names injury may get it."""
    words = DistressingWords.read()
    distressing = {
        r.photo_id
        for r in captioned.recommend("跳楼 流血 受伤 裸体 要死", top_k=20, closest=True).results
        if words.named_in(r.description)
    }
    assert len(distressing) >= 4  # the library holds them, and a text naming them finds them
    for text in ("今天股票又跌了", "股票跌成跳楼价了", "今天好累", "热得要死", "周末去游泳"):
        for closest in (False, True):
            found = captioned.recommend(text, closest=closest).results
            assert not {r.photo_id for r in found} & distressing, text
    handler = MessageHandler(
        captioned, ChatSettings(allow_everyone=True), PhotoPreparer(tmp_path, 2_000_000)
    )
    message = FakeMessage("/配图? 今天股票又跌了")
    assert asyncio.run(handler.handle(message)) is Outcome.REPLIED
    assert message.photos and "跳楼" not in message.said[0]
    sent = {photo.path.name for photo in message.photos}
    paths = {captioned.photo_path(pid) for pid in distressing}
    assert not sent & {p.name for p in paths if p is not None}
    injured = captioned.recommend("比赛时运动员受伤了", closest=True).results
    assert any(words.named_in(r.description) for r in injured)  # asked for: may be shown


def test_a_dozen_look_alike_photos_of_a_dog_at_the_beach_answer_posts_about_it(
    tmp_path: Path,
    m3e_path: Path,
    embedder: SentenceTransformerEmbedder,
    openai_server: FakeOpenAIServer,
) -> None:
    """The background is not the photos' own cluster: twelve real dog photos that the vision
    model (over real HTTP) describes alike, as a pet owner's dog photos or a first index of a
    dozen are, still fit the posts they match word for word; unrelated posts still get none."""
    alike = "主体：海边奔跑的狗\n场景：户外海滩，晴天\n人物动作：无\n氛围：欢快、自由\n适合主题：遛狗、海边度假"
    openai_server.vision_fn = lambda image: alike
    dogs = [p for p in read_eval_captions(600) if any("狗" in c for c in p.captions[:4])][:12]
    write_library(tmp_path, dogs, {})
    vision = {"base_url": openai_server.base_url, "model": "fake-vl", "max_retries": 0}
    settings = no_key_settings(tmp_path, m3e_path, vision=vision)
    app = build_app(settings, embedder=embedder)
    try:
        assert app.index().described == 12 and openai_server.calls["vision"] == 12
        for text in ("海边的狗", "我家狗狗在沙滩上奔跑", "周末带狗去海边"):
            result = app.recommend(text)
            assert not result.nothing_fits and len(result.results) >= 1, (text, result.message)
        for text in ("今天股票又跌了", "项目周报写到半夜", "线性代数作业写不完"):
            assert app.recommend(text).nothing_fits, text
    finally:
        app.close()


def test_an_indexing_job_stops_calling_a_vision_model_that_keeps_failing_and_says_so_once(
    tmp_path: Path,
    m3e_path: Path,
    embedder: SentenceTransformerEmbedder,
    openai_server: FakeOpenAIServer,
) -> None:
    """Three failed photos in a row rest the vision model: the job's other photos are not sent
    (the next run describes them), and the job reports the rest once, not once a photo."""
    photos = read_eval_captions(12)
    write_library(tmp_path, photos, {})
    openai_server.set_mode("vision", fail_status=500, fail_times=1000)
    vision = {
        "base_url": openai_server.base_url,
        "model": "fake-vl",
        "max_retries": 0,
        "concurrency": 1,
    }
    app = build_app(no_key_settings(tmp_path, m3e_path, vision=vision), embedder=embedder)
    try:
        report = app.index()
        assert report.failed == 12 and report.described == 0
        assert openai_server.calls["vision"] == 3  # then no request for the other nine
        resting = [line for line in report.errors if "resting" in line]
        assert len(resting) == 1 and len(report.errors) == 4
        openai_server.reset()
    finally:
        app.close()


def test_the_word_list_tells_a_harmless_form_from_the_thing_itself() -> None:
    """跳楼价 and 累死了 name nothing distressing and disown the link to such a photo;
    正在跳楼 and 受伤 name it."""
    words = DistressingWords.read()
    assert words.named_in("股票跌成跳楼价了") is None and words.only_harmless_in("股票跌成跳楼价了")
    assert words.named_in("今天累死了") is None and words.only_harmless_in("今天累死了")
    assert words.named_in("有人正在跳楼") == "跳楼" and not words.only_harmless_in("有人正在跳楼")
    assert words.named_in("膝盖受伤了") is not None
    assert words.named_in("周末去游泳") is None and not words.only_harmless_in("周末去游泳")
