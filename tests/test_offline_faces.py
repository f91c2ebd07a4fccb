"""The offline describer's faces: who the detected people are, on real eval photos, and the
wording and decoding around the two face models.

The photo tests need `models/blazeface-back.onnx`, `models/faceres.onnx` and the COCO detector,
which `scripts/setup.sh` puts there (through `scripts/fetch_detector.sh`); without them they
skip and say so. The eval photos are chosen by their English captions, which were not used to
set the thresholds (those came from the Chinese captions 1-4 of one-person photos).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from config.settings import (
    DEFAULT_DETECTOR_MODEL,
    DEFAULT_FACE_ATTRIBUTES_MODEL,
    DEFAULT_FACE_MODEL,
    OfflineSettings,
)
from index.describers.detect import Detection, OnnxDetector
from index.describers.faces import (
    WHO_WORDS,
    OnnxFaceReader,
    blazeface_anchors,
    decode_faces,
    head_region,
    square_around,
    who_word,
)
from index.describers.offline import OfflineDescriber
from index.describers.offline_words import SceneWriter, people_words
from index.errors import ModelUnavailable
from index.models import PhotoFile
from index.wiring import make_describer
from tests.support.core_fixtures import EVAL_DIR, SettingsFactory

MODELS = (DEFAULT_DETECTOR_MODEL, DEFAULT_FACE_MODEL, DEFAULT_FACE_ATTRIBUTES_MODEL)
FEMALE = re.compile(r"\b(woman|women|girls?|lady|ladies|she|her)\b")
MALE = re.compile(r"\b(man|men|boys?|guy|he|his)\b")
CHILD = re.compile(r"\b(boys?|girls?|child|children|kids?|toddler|baby)\b")
GROWN = re.compile(r"\b(man|men|woman|women|lady|adult)\b")
SUBJECT = re.compile(r"^主体：(.*)$", re.MULTILINE)
CHILD_WORDS = ("小孩", "小男孩", "小女孩", "男孩", "女孩", "孩子")


def _person(box: tuple[float, float, float, float] = (0.2, 0.1, 0.8, 0.9)) -> Detection:
    return Detection("person", 0.9, box)


@pytest.fixture(scope="module")
def describer() -> OfflineDescriber:
    absent = [str(model) for model in MODELS if not model.is_file()]
    if absent:
        pytest.skip(f"{', '.join(absent)} absent: scripts/fetch_detector.sh makes them")
    detector = OnnxDetector(DEFAULT_DETECTOR_MODEL, min_score=OfflineSettings().min_detection_score)
    faces = OnnxFaceReader(DEFAULT_FACE_MODEL, DEFAULT_FACE_ATTRIBUTES_MODEL)
    return OfflineDescriber(max_pixels=50_000_000, detector=detector, faces=faces)


def _records() -> list[dict[str, Any]]:
    with (EVAL_DIR / "captions.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def _one_kind(want: re.Pattern[str], unwanted: re.Pattern[str], count: int) -> list[Path]:
    """The first `count` eval photos whose five English captions all match `want`, none
    `unwanted`, and none mentions a dog or a group."""
    chosen = []
    for record in _records():
        english = [c.lower() for c in record["captions_en"]]
        if len(english) == 5 and all(
            want.search(c) and not unwanted.search(c) and not re.search(r"dog|group|crowd", c)
            for c in english
        ):
            chosen.append(EVAL_DIR / record["image"])
    return chosen[:count]


def _subject(describer: OfflineDescriber, path: Path) -> str:
    with Image.open(path) as image:
        photo = PhotoFile("test", path, path.name, path.stat().st_size, 0.0, *image.size)
    found = SUBJECT.search(describer.describe(photo))
    return found.group(1) if found else ""


def test_photos_of_men_are_told_as_men(describer: OfflineDescriber) -> None:
    photos = _one_kind(re.compile(r"\bman\b"), re.compile(f"{FEMALE.pattern}|{CHILD.pattern}"), 16)
    subjects = [_subject(describer, path) for path in photos]
    men = [s for s in subjects if "男人" in s]
    women = [s for s in subjects if "女" in s]
    assert len(photos) == 16 and len(men) >= 6 and len(women) <= 2, subjects


def test_photos_of_women_are_told_as_women(describer: OfflineDescriber) -> None:
    photos = _one_kind(re.compile(r"\bwoman\b"), re.compile(f"{MALE.pattern}|{CHILD.pattern}"), 16)
    subjects = [_subject(describer, path) for path in photos]
    women = [s for s in subjects if "女人" in s]
    men = [s for s in subjects if "男" in s]
    assert len(photos) == 16 and len(women) >= 5 and len(men) < len(women), subjects


def test_photos_of_children_are_told_as_children(describer: OfflineDescriber) -> None:
    photos = _one_kind(CHILD, GROWN, 16)
    subjects = [_subject(describer, path) for path in photos]
    children = [s for s in subjects if any(word in s for word in CHILD_WORDS)]
    grown = [s for s in subjects if re.search("男人|女人|老人", s)]
    assert len(photos) == 16 and len(children) >= 6 and len(grown) < len(children), subjects


def test_a_person_without_a_face_stays_a_person(describer: OfflineDescriber) -> None:
    """A grey image has no face to read: the person keeps no word, and the count says 人."""
    reader = OnnxFaceReader(DEFAULT_FACE_MODEL, DEFAULT_FACE_ATTRIBUTES_MODEL)
    grey = Image.new("RGB", (640, 480), (128, 128, 128))
    told = reader.read(grey, [_person(), Detection("dog", 0.8, (0.0, 0.5, 0.3, 1.0))])
    assert [d.who for d in told] == ["", ""]
    assert SceneWriter().subject(told, grey) == "一个人和一只狗"
    odd = [_person((0.5, 0.5, 0.5, 0.5)), _person((0.99, 0.0, 1.0, 0.01)), _person((0, 0, 1, 1))]
    assert reader.read(grey, odd) == odd  # empty, edge and whole-photo boxes: no error
    assert reader.read(Image.new("L", (10, 3000)), [_person()]) == [_person()]  # grey, thin


def test_a_face_model_that_is_not_a_face_model_is_refused_by_name(tmp_path: Path) -> None:
    if not DEFAULT_DETECTOR_MODEL.is_file() or not DEFAULT_FACE_ATTRIBUTES_MODEL.is_file():
        pytest.skip("models absent: scripts/fetch_detector.sh makes them")
    photo = Image.new("RGB", (320, 240), (90, 120, 150))
    wrong = OnnxFaceReader(DEFAULT_DETECTOR_MODEL, DEFAULT_FACE_ATTRIBUTES_MODEL)
    with pytest.raises(ModelUnavailable, match="not BlazeFace"):
        wrong.read(photo, [_person()])
    garbage = tmp_path / "face.onnx"
    garbage.write_bytes(b"<html>not a model</html>")
    with pytest.raises(ModelUnavailable, match=r"cannot load face model .*face\.onnx"):
        OnnxFaceReader(garbage, DEFAULT_FACE_ATTRIBUTES_MODEL).read(photo, [_person()])


def test_absent_face_models_leave_people_as_people(
    make_settings: SettingsFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if not DEFAULT_DETECTOR_MODEL.is_file():
        pytest.skip(f"{DEFAULT_DETECTOR_MODEL} absent: scripts/fetch_detector.sh makes it")
    missing = tmp_path / "nowhere" / "blazeface-back.onnx"
    settings = make_settings(offline={"face_model": str(missing)})
    with caplog.at_level(logging.WARNING, logger="index.wiring"):
        describer = make_describer(settings, "offline")
    assert isinstance(describer, OfflineDescriber)
    assert f"no face model at {missing}" in caplog.text
    assert "人" in caplog.text


def test_who_words_are_cautious() -> None:
    assert who_word(0.9, 35) == "男人"
    assert who_word(0.2, 35) == "女人"
    assert who_word(0.58, 35) == ""  # the gender head is unsure: no word, the person stays 人
    assert who_word(0.9, 15) == "男孩"
    assert who_word(0.55, 15) == "孩子"
    assert who_word(0.7, 6) == "小孩"  # a child's gender only when the head is sure
    assert who_word(0.8, 6) == "小男孩"
    assert who_word(0.1, 6) == "小女孩"
    assert who_word(0.9, 70) == "老人"
    every = {who_word(male / 20, age) for male in range(21) for age in range(100)}
    assert every - {""} == WHO_WORDS  # offline_words counts people by these words


def test_people_are_counted_by_kind() -> None:
    man, girl, unknown = (
        Detection("person", 0.9, (0, 0, 0.5, 0.5), who) for who in ("男人", "小女孩", "")
    )
    assert people_words([man, girl]) == ["一个男人", "一个小女孩"]
    assert people_words([girl, girl, unknown]) == ["两个小女孩", "另一个人"]
    assert people_words([man, unknown, unknown]) == ["一个男人", "另外两个人"]
    assert people_words([unknown, unknown]) == ["两个人"]
    assert people_words([girl] * 5) == ["一群小女孩"]
    assert people_words([man, girl, unknown, unknown, unknown]) == ["一群人"]


def test_activities_and_clothes_use_the_person_word() -> None:
    image = Image.new("RGB", (400, 400), (200, 30, 30))  # every top is red
    boy = Detection("person", 0.9, (0.2, 0.1, 0.6, 0.9), "男孩")
    bike = Detection("bicycle", 0.8, (0.2, 0.5, 0.6, 0.95))
    assert SceneWriter().activities([boy, bike], image) == ["一个男孩骑自行车", "穿红色衣服的男孩"]


def test_decoding_finds_the_anchor_that_fires() -> None:
    anchors = blazeface_anchors()
    assert anchors.shape == (896, 2)
    scores = np.full(896, -10.0, dtype=np.float32)
    boxes = np.zeros((896, 16), dtype=np.float32)
    hit = 600  # in the 8x8 grid
    scores[hit] = 4.0
    boxes[hit, :4] = (12.8, -25.6, 51.2, 64.0)  # 0.05 right, 0.1 up, 0.2 wide, 0.25 high
    scores[hit + 1] = 3.0  # the same face from the next anchor: suppressed
    boxes[hit + 1, :4] = (12.8, -25.6, 51.2, 64.0)
    faces = decode_faces(scores, boxes, 0.5)
    cx, cy = anchors[hit, 0] + 0.05, anchors[hit, 1] - 0.1
    assert len(faces) == 1
    assert faces[0][0] == pytest.approx(1 / (1 + np.exp(-4.0)))
    assert faces[0][1] == pytest.approx((cx - 0.1, cy - 0.125, cx + 0.1, cy + 0.125), abs=1e-6)
    assert decode_faces(scores, boxes, 0.99) == []


def test_the_head_region_is_a_square_over_the_top_of_the_person() -> None:
    image = Image.new("RGB", (1000, 500))
    x1, y1, x2, y2 = head_region(image, _person((0.4, 0.2, 0.5, 1.0)))
    assert x2 - x1 == y2 - y1 == 180  # 45% of a 400 px tall box, wider than its 100 px
    assert (x1 + x2) / 2 == 450 and y1 == 100
    assert square_around((10, 10, 30, 20), 2.0) == (0, -5, 40, 35)
