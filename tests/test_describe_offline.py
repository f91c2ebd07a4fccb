"""The offline describer on real files: rendered Chinese text, a HEIC, EXIF time and place."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from cli.main import build_parser
from index.describers.offline import (
    KEY,
    LABELS_FILE,
    OFFLINE_MARK,
    ImageNetTagger,
    OfflineDescriber,
    describe_lines,
    read_labels,
    tag_input,
)
from index.library.scan import scan_library
from index.models import PhotoFile
from index.search.embed import SentenceTransformerEmbedder
from index.wiring import build_app
from tests.support.badfiles import encode
from tests.support.core_fixtures import EVAL_DIR, SettingsFactory
from tests.support.made_photos import DALI, HANGZHOU, MadePhoto, photo_exif, text_image, write_photo

MAX_PIXELS = 50_000_000
SIGN = ["大理古城欢迎您", "营业时间 9:00-21:00"]
SUMMER_AFTERNOON = datetime(2025, 7, 14, 15, 20)


@pytest.fixture(scope="session")
def describer() -> OfflineDescriber:
    """One describer for the session: the OCR and tagging models load on first use."""
    return OfflineDescriber(max_pixels=MAX_PIXELS)


def _scanned(root: Path) -> dict[str, PhotoFile]:
    result = scan_library(root, max_file_bytes=50_000_000, max_pixels=MAX_PIXELS)
    return {photo.rel_path: photo for photo in result.photos}


def _lines(description: str) -> dict[str, str]:
    return dict(line.split("：", 1) for line in description.splitlines() if "：" in line)


def test_ocr_reads_rendered_chinese_text(describer: OfflineDescriber, tmp_path: Path) -> None:
    write_photo(tmp_path, MadePhoto("sign.jpg", ""), text_image(SIGN))
    description = describer.describe(_scanned(tmp_path)["sign.jpg"])
    text = _lines(description)["画面文字"]
    assert "大理古城欢迎您" in text and "营业时间" in text
    assert description.splitlines()[-1] == OFFLINE_MARK
    assert "拍摄时间" not in description  # no EXIF written: nothing invented


def test_heic_with_exif_time_and_place(describer: OfflineDescriber, tmp_path: Path) -> None:
    photo = MadePhoto("phone/IMG_0001.HEIC", "", SUMMER_AFTERNOON, DALI)
    write_photo(tmp_path, photo, text_image(SIGN[:1]))
    scanned = _scanned(tmp_path)["phone/IMG_0001.HEIC"]
    assert scanned.taken_at == SUMMER_AFTERNOON
    lines = _lines(describer.describe(scanned))
    assert lines["拍摄时间"] == "2025年7月14日 下午，夏季"
    assert lines["拍摄地点"] == "云南省大理白族自治州大理市"
    assert "大理古城欢迎您" in lines["画面文字"]


def test_an_uploaded_image_brings_its_own_exif(describer: OfflineDescriber) -> None:
    data = encode(text_image(["洱海"]), "JPEG", exif=photo_exif(SUMMER_AFTERNOON, DALI))
    lines = _lines(describer.describe_bytes(data))
    assert lines["拍摄地点"] == "云南省大理白族自治州大理市"
    assert lines["拍摄时间"].startswith("2025年7月14日")


def test_lines_say_only_what_was_found() -> None:
    assert describe_lines([], "", None, None) == ["画面内容：离线模型未能识别"]
    assert describe_lines(["金毛猎犬"], "", datetime(2024, 1, 2, 20), None) == [
        "画面可能有：金毛猎犬",
        "拍摄时间：2024年1月2日 晚上，冬季",
    ]


def test_tagger_names_dogs_in_real_dog_photos() -> None:
    """EfficientNet-Lite0 with its TF-Lite input scaling on photos whose captions say 'dog'."""
    records = [json.loads(line) for line in (EVAL_DIR / "captions.jsonl").open(encoding="utf-8")]
    dogs = [r for r in records if sum("dog" in c.lower() for c in r["captions_en"]) == 5][:12]
    tagger = ImageNetTagger()
    dog_labels = set(read_labels(LABELS_FILE)[151:269])  # ImageNet classes 151-268 are dogs
    hits = 0
    for record in dogs:
        with Image.open(EVAL_DIR / record["image"]) as image:
            tags = tagger.tags(image)
        assert abs(sum(p for _, p in tags) - 1.0) < 1e-3 and len(tags) == 1000
        hits += tags[0][0] in dog_labels
    assert len(dogs) == 12 and hits >= 7, f"only {hits}/12 dog photos tagged as a dog breed"


def test_tag_input_shape_and_scaling() -> None:
    batch = tag_input(Image.new("RGB", (640, 480), (255, 127, 0)))
    assert batch.shape == (1, 3, 224, 224) and batch.dtype.name == "float32"
    assert batch[0, :, 100, 100].tolist() == pytest.approx([1.0, 0.0, -127 / 128])


def test_index_offline_then_a_better_describer_replaces_it(
    tmp_path: Path, make_settings: SettingsFactory, embedder: SentenceTransformerEmbedder
) -> None:
    root = tmp_path / "photos"
    write_photo(root, MadePhoto("sign.jpg", "", SUMMER_AFTERNOON, DALI), text_image(SIGN[:1]))
    write_photo(root, MadePhoto("noise.jpg", "", None, None, seed=7))
    settings = make_settings(library=root, similarity_threshold=0.0)
    offline = build_app(settings, embedder=embedder, describer="offline")
    assert offline.describer.key == KEY
    assert offline.index().described == 2
    found = offline.recommend("大理古城欢迎您", top_k=1, rerank=False).results[0]
    assert found.path == "sign.jpg" and OFFLINE_MARK in found.description
    sidecar = tmp_path / "vision.jsonl"
    sidecar.write_text(json.dumps({"image": "sign.jpg", "description": "古城门口的招牌"}) + "\n")
    later = build_app(settings, embedder=embedder, descriptions=sidecar).index()
    assert (later.described, later.embedded) == (1, 1)
    again = offline.recommend("古城门口的招牌", top_k=1, rerank=False).results[0]
    assert (again.path, again.description) == ("sign.jpg", "古城门口的招牌")


def test_similar_photos_ignore_the_time_and_place_in_the_description(
    tmp_path: Path, make_settings: SettingsFactory, embedder: SentenceTransformerEmbedder
) -> None:
    """An upload from Hangzhou finds the Dali sign: its 拍摄地点 line is no place filter."""
    root = tmp_path / "photos"
    write_photo(root, MadePhoto("sign.jpg", "", SUMMER_AFTERNOON, DALI), text_image(SIGN[:1]))
    app = build_app(make_settings(library=root, similarity_threshold=0.0), embedder=embedder)
    app.index()
    upload = encode(text_image(SIGN[:1]), "JPEG", exif=photo_exif(SUMMER_AFTERNOON, HANGZHOU))
    similar = app.similar_to_image(upload)
    assert [r.path for r in similar.results] == ["sign.jpg"] and similar.message is None


def test_describer_choice(
    make_settings: SettingsFactory, embedder: SentenceTransformerEmbedder
) -> None:
    assert build_app(make_settings(), embedder=embedder).describer.key == KEY  # no key: offline
    keyed = make_settings(vision={"api_key": "sk-test"})
    assert build_app(keyed, embedder=embedder).describer.key != KEY
    assert build_app(keyed, embedder=embedder, describer="offline").describer.key == KEY
    args = build_parser().parse_args(["index", "--describer", "offline"])
    assert args.describer == "offline"
