"""The bot's replies over the real gateway, with a stand-in core to make failures happen."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest
from PIL import Image

from bot.commands import NOTE_NOT_RERANKED, SORRY
from bot.handler import Outcome
from config.settings import WechatSettings
from index.errors import IndexBusy, IndexMismatch
from index.models import Note, NoteKind, Rerank, RerankState
from tests.support.badfiles import encode, noise_image
from tests.wechat.conftest import StartWechat
from tests.wechat.fakes import FakeFinder, FakeStatus

MAX_IMAGE_BYTES = 100_000


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def photos(tmp_path: Path) -> dict[str, Path]:
    """A small JPEG, a WebP, and a PNG over the size limit."""
    folder = tmp_path / "library"
    folder.mkdir()
    return {
        "small": write(folder / "small.jpg", encode(noise_image(64, 48, seed=1), "JPEG")),
        "webp": write(folder / "photo.webp", encode(noise_image(300, 200, seed=2), "WEBP")),
        "big": write(folder / "big.png", encode(noise_image(400, 400, seed=3), "PNG")),
    }


def test_photos_are_sent_in_order_and_converted_when_needed(
    start_wechat: StartWechat, photos: dict[str, Path]
) -> None:
    before = {name: digest(path) for name, path in photos.items()}
    assert photos["big"].stat().st_size > MAX_IMAGE_BYTES
    finder = FakeFinder(files=[photos["small"], photos["webp"], photos["big"]])
    chat = start_wechat(finder, max_image_bytes=MAX_IMAGE_BYTES)
    chat.say("/配图 海边")
    text, files = chat.reply(photos=3)
    assert text["text"].splitlines()[1:] == ["1. 理由1：small", "2. 理由2：photo", "3. 理由3：big"]
    small, webp, big = files
    assert (small["fileName"], small["sha256"]) == ("small.jpg", before["small"])
    for sent, name in ((webp, "photo.jpg"), (big, "big.jpg")):
        assert sent["fileName"] == name and sent["mediaType"] == "image/jpeg"
        assert sent["magic"].startswith("ffd8ff") and sent["bytes"] <= MAX_IMAGE_BYTES
    assert {name: digest(path) for name, path in photos.items()} == before  # originals untouched
    assert Image.open(photos["webp"]).format == "WEBP"


def test_a_phone_sized_photo_arrives_within_the_default_limit(
    start_wechat: StartWechat, tmp_path: Path
) -> None:
    """A 6 MB camera JPEG would break the gateway's 4 MiB gRPC message limit if sent as is."""
    big = write(
        tmp_path / "camera.jpg", encode(noise_image(2000, 1500, seed=4), "JPEG", quality=97)
    )
    assert big.stat().st_size > 4 * 1024 * 1024
    default_limit = WechatSettings().max_image_bytes
    chat = start_wechat(FakeFinder(files=[big]))
    chat.say("/配图 海边")
    _, files = chat.reply(photos=1)
    assert files[0]["fileName"] == "camera.jpg" and files[0]["magic"].startswith("ffd8ff")
    assert files[0]["bytes"] <= default_limit


def test_a_photo_gone_from_the_library_is_left_out(
    start_wechat: StartWechat, photos: dict[str, Path], tmp_path: Path
) -> None:
    finder = FakeFinder(files=[tmp_path / "deleted.jpg", photos["small"]])
    chat = start_wechat(finder)
    chat.say("/配图 海边")
    text, files = chat.reply(photos=1)
    assert text["text"].splitlines() == ["为「海边」挑了 1 张照片：", "1. 理由2：small"]
    assert files[0]["fileName"] == "small.jpg"


def test_vector_order_answer_carries_a_note(
    start_wechat: StartWechat, photos: dict[str, Path]
) -> None:
    failed = Rerank(RerankState.FAILED, "timed out")
    note = Note(NoteKind.RERANK_FAILED, "排序模型暂时不可用，已按匹配度排序。")
    finder = FakeFinder(files=[photos["small"]], rerank=failed, notes=(note,))
    chat = start_wechat(finder)
    chat.say("/配图 海边")
    text, _ = chat.reply(photos=1)
    assert text["text"].endswith(NOTE_NOT_RERANKED)


def test_no_match_names_the_closest(start_wechat: StartWechat) -> None:
    message = "图库里没有适合这段文字的照片（最接近的是「海边的孩子」）。"
    chat = start_wechat(FakeFinder(notes=(Note(NoteKind.NO_MATCH, message),)))
    chat.say("/配图 火星基地")
    first, hint = chat.reply()[0]["text"].splitlines()
    assert first == message and hint.startswith("还可以试试：")
    assert chat.next_outcome() is Outcome.REPLIED
    assert chat.bot_said() == []


@pytest.mark.parametrize(
    ("error", "reply"),
    [
        (IndexBusy("job-1"), "正在整理相册"),
        (IndexMismatch("other model"), "索引需要重建"),
        (RuntimeError("chroma exploded"), SORRY),
    ],
)
def test_failures_become_polite_replies(
    start_wechat: StartWechat, error: BaseException, reply: str
) -> None:
    chat = start_wechat(FakeFinder(error=error))
    chat.say("/配图 海边")
    assert reply in chat.reply()[0]["text"]
    assert chat.next_outcome() is Outcome.FAILED


def test_status_while_indexing_with_a_problem(start_wechat: StartWechat) -> None:
    status = FakeStatus(photos=0, last_index_at=None, indexing=True, problem="model mismatch")
    chat = start_wechat(FakeFinder(status_value=status))
    chat.say("/状态")
    text = chat.reply()[0]["text"]
    assert "已索引 0 张照片" in text and "还没有索引过" in text
    assert "正在索引中" in text and "需要重建" in text
    assert "model mismatch" not in text  # English developer detail stays out of the chat


def test_one_slow_request_does_not_hold_up_others(
    start_wechat: StartWechat, photos: dict[str, Path]
) -> None:
    gate = threading.Event()
    finder = FakeFinder(files=[photos["small"]], slow_gate=gate)
    chat = start_wechat(finder)
    try:
        chat.say("/配图 慢慢来")
        chat.say("/配图 快", sender="Bob")
        text, _ = chat.reply(photos=1, timeout=10)
        assert "为「快」" in text["text"]
    finally:
        gate.set()
    text, _ = chat.reply(photos=1)
    assert "为「慢慢来」" in text["text"]
