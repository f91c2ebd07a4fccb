"""The offline describer's object detector on real eval photos, and the wording of its boxes.

The photo tests need `models/centernet-coco.onnx`, which `scripts/setup.sh` puts there (through
`scripts/fetch_detector.sh`); without it they skip and say so.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw, ImageFont

from config.settings import DEFAULT_DETECTOR_MODEL, OfflineSettings
from index.describers.detect import (
    Detection,
    OnnxDetector,
    detector_input,
    read_coco_classes,
    suppress_duplicates,
)
from index.describers.offline import UNKNOWN_LINE, OfflineDescriber, says_nothing
from index.describers.offline_words import SceneWriter, count_words, reconcile_animals
from index.models import PhotoFile
from index.search.embed import SentenceTransformerEmbedder
from index.wiring import build_app
from tests.support.core_fixtures import EVAL_DIR, SettingsFactory
from tests.support.made_photos import cjk_font_path

PERSON_WORDS = re.compile(r"\b(man|woman|men|women|boy|girl|person|people|child|children|kids?)\b")
PERSON_COUNT = re.compile(r"^主体：.*(?:[一两三四五六七八九十]个人|一群人)", re.MULTILINE)
BANNER = "海边日落真美"


@pytest.fixture(scope="module")
def detector() -> OnnxDetector:
    if not DEFAULT_DETECTOR_MODEL.is_file():
        pytest.skip(f"{DEFAULT_DETECTOR_MODEL} absent: scripts/fetch_detector.sh makes it")
    return OnnxDetector(DEFAULT_DETECTOR_MODEL, min_score=OfflineSettings().min_detection_score)


@pytest.fixture(scope="module")
def describer(detector: OnnxDetector) -> OfflineDescriber:
    return OfflineDescriber(max_pixels=50_000_000, detector=detector)


def _records() -> list[dict[str, Any]]:
    with (EVAL_DIR / "captions.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def _all_captions_say(record: dict[str, Any], pattern: re.Pattern[str], no: str) -> bool:
    english = [c.lower() for c in record["captions_en"]]
    return len(english) == 5 and all(pattern.search(c) and no not in c for c in english)


def _describe(describer: OfflineDescriber, path: Path) -> str:
    with Image.open(path) as image:
        photo = PhotoFile("test", path, path.name, path.stat().st_size, 0.0, *image.size)
    return describer.describe(photo)


def test_photos_of_people_get_a_person_count(describer: OfflineDescriber) -> None:
    people = [r for r in _records() if _all_captions_say(r, PERSON_WORDS, "dog")][:12]
    described = [_describe(describer, EVAL_DIR / r["image"]) for r in people]
    counted = [d for d in described if PERSON_COUNT.search(d)]
    assert len(people) == 12 and len(counted) >= 10, "\n\n".join(described)


def test_dog_photos_name_the_dog(describer: OfflineDescriber) -> None:
    dogs = [r for r in _records() if _all_captions_say(r, re.compile(r"\bdogs?\b"), "cat")][:12]
    described = [_describe(describer, EVAL_DIR / r["image"]) for r in dogs]
    named = [d for d in described if re.search(r"^主体：.*狗", d, re.MULTILINE)]
    assert len(dogs) == 12 and len(named) >= 10, "\n\n".join(described)


def test_rendered_chinese_text_on_a_real_photo_keeps_its_ocr(
    describer: OfflineDescriber, tmp_path: Path
) -> None:
    """A people photo with a caption banner: the text is read and the people still counted."""
    record = next(r for r in _records() if _all_captions_say(r, PERSON_WORDS, "dog"))
    with Image.open(EVAL_DIR / record["image"]) as source:
        photo = source.convert("RGB").resize((672, 672))
    draw = ImageDraw.Draw(photo)
    draw.rectangle((0, 580, 672, 672), fill=(250, 250, 250))
    draw.text((40, 595), BANNER, fill=(20, 20, 20), font=ImageFont.truetype(cjk_font_path(), 56))
    photo.save(tmp_path / "banner.jpg", quality=92)
    description = _describe(describer, tmp_path / "banner.jpg")
    assert f"画面文字：{BANNER}" in description.splitlines()
    assert PERSON_COUNT.search(description), description


def test_detector_boxes_are_fractions_of_the_photo(detector: OnnxDetector) -> None:
    record = next(r for r in _records() if _all_captions_say(r, PERSON_WORDS, "dog"))
    with Image.open(EVAL_DIR / record["image"]) as image:
        found = detector.detect(image)
    assert found and found[0].label == "person" and found[0].score >= 0.25
    assert all(0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1 for x1, y1, x2, y2 in (d.box for d in found))
    assert [d.score for d in found] == sorted((d.score for d in found), reverse=True)


def test_without_the_model_file_the_describer_runs_without_detection(
    make_settings: SettingsFactory,
    embedder: SentenceTransformerEmbedder,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    missing = tmp_path / "no-such-detector.onnx"
    settings = make_settings(offline={"detector_model": str(missing)})
    with caplog.at_level(logging.WARNING, logger="index.wiring"):
        app = build_app(settings, embedder=embedder, describer="offline")
    assert f"no object detector at {missing}" in caplog.text
    record = next(r for r in _records() if _all_captions_say(r, PERSON_WORDS, "dog"))
    description = app.describer.describe_bytes((EVAL_DIR / record["image"]).read_bytes())
    assert "主体：" not in description and description.endswith("（离线描述，未经视觉模型）")


# --- the wording, on hand-made boxes -----------------------------------------------------------
def _box(label: str, box: tuple[float, float, float, float], score: float = 0.8) -> Detection:
    return Detection(label, score, box)


GREY = Image.new("RGB", (100, 100), (128, 128, 128))


def test_counts_read_like_a_person_would_say_them() -> None:
    assert count_words(1, "个", "人") == "一个人"
    assert count_words(2, "只", "狗") == "两只狗"
    assert count_words(3, "辆", "自行车") == "三辆自行车"
    assert count_words(5, "个", "人") == "一群人"
    assert count_words(12, "只", "鸟") == "十多只鸟"


def test_subject_puts_people_first_and_counts_each_kind() -> None:
    boxes = [
        _box("dog", (0.6, 0.6, 0.9, 0.9)),
        _box("person", (0.0, 0.0, 0.3, 0.9)),
        _box("person", (0.3, 0.0, 0.6, 0.9)),
        _box("person", (0.95, 0.95, 0.99, 0.99)),  # a far-away speck: not counted
    ]
    assert SceneWriter().subject(boxes, GREY) == "两个人和一只狗"


def test_people_touching_bicycles_ride_them() -> None:
    boxes = [_box("person", (i * 0.3, 0.0, i * 0.3 + 0.25, 0.8)) for i in range(3)]
    boxes += [_box("bicycle", (i * 0.3, 0.5, i * 0.3 + 0.25, 0.95)) for i in range(3)]
    boxes.append(_box("bicycle", (0.0, 0.97, 0.05, 1.0)))  # too small, and touching no one
    lines = SceneWriter().lines(boxes, GREY, [])
    assert lines[:2] == ["主体：三个人和三辆自行车", "人物动作：三个人骑自行车"]


def test_a_dog_with_a_frisbee_and_a_black_coat() -> None:
    dark = Image.new("RGB", (100, 100), (15, 15, 15))
    boxes = [_box("dog", (0.1, 0.1, 0.8, 0.8)), _box("frisbee", (0.6, 0.2, 0.75, 0.35))]
    writer = SceneWriter()
    assert writer.subject(boxes, dark) == "一只黑狗和一个飞盘"
    assert writer.activities(boxes, dark) == ["狗叼着飞盘"]


def test_imagenet_sure_of_a_dog_overrules_a_cat_box() -> None:
    cat = [_box("cat", (0.1, 0.1, 0.8, 0.8)), _box("person", (0.0, 0.0, 0.2, 0.9))]
    assert [d.label for d in reconcile_animals(cat, 0.9)] == ["dog", "person"]
    assert [d.label for d in reconcile_animals(cat, 0.2)] == ["cat", "person"]
    alone = reconcile_animals([_box("person", (0.0, 0.0, 0.2, 0.9))], 0.7)
    assert [(d.label, d.box) for d in alone][1] == ("dog", (0.0, 0.0, 1.0, 1.0))


def test_duplicate_boxes_of_one_class_are_dropped() -> None:
    boxes = [
        _box("person", (0.0, 0.0, 0.5, 1.0), 0.4),
        _box("person", (0.01, 0.0, 0.5, 1.0), 0.6),
        _box("dog", (0.0, 0.0, 0.5, 1.0), 0.3),
    ]
    assert [(d.label, d.score) for d in suppress_duplicates(boxes)] == [
        ("person", 0.6),
        ("dog", 0.3),
    ]


def test_detector_input_follows_the_models_layout() -> None:
    image = Image.new("RGB", (300, 200), (255, 0, 0))
    nhwc, size = detector_input(image, [1, 512, 512, 3], 255.0)
    assert nhwc.shape == (1, 512, 512, 3) and size == (512, 512) and nhwc.max() == 255.0
    nchw, size = detector_input(image, [1, 3, "height", "width"], 1.0)
    assert nchw.shape == (1, 3, 640, 640) and nchw[0, 0].max() == 1.0 and nchw[0, 1].max() == 0


def test_the_80_coco_classes_have_chinese_names() -> None:
    classes = read_coco_classes()
    assert (classes[0].chinese, classes[16].chinese, classes[1].measure) == ("人", "狗", "辆")
    assert all(c.chinese and c.measure for c in classes)


def test_a_description_with_only_time_says_nothing() -> None:
    assert says_nothing(f"拍摄时间：2025年7月14日 下午，夏季\n{UNKNOWN_LINE}")
    assert not says_nothing("主体：一个人\n（离线描述，未经视觉模型）")
