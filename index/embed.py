"""Sentence-transformers embedder (m3e by default)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from index.errors import ModelUnavailable
from index.model_source import ensure_model_obtainable
from index.ports import Vectors

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)


def model_identity(name_or_path: str) -> str:
    """A stable name for the model: a local folder is known by its folder name."""
    path = Path(name_or_path).expanduser()
    return path.name if path.is_dir() else name_or_path


class SentenceTransformerEmbedder:
    """Loads the model on first use; `embed` returns normalised float32 rows."""

    def __init__(
        self, name_or_path: str, *, device: str = "cpu", batch_size: int = 32, threads: int = 0
    ) -> None:
        self._name_or_path = name_or_path
        self._device = device
        self._batch_size = batch_size
        self._threads = threads  # torch intra-op threads, set when the model loads; 0 = torch's
        self._model: SentenceTransformer | None = None
        self._load_lock = threading.Lock()

    @property
    def model_name(self) -> str:
        return model_identity(self._name_or_path)

    @property
    def dimension(self) -> int:
        dim = self._loaded().get_embedding_dimension()
        if dim is None:
            raise ModelUnavailable(f"embedding model {self.model_name} does not report a dimension")
        return int(dim)

    def load(self) -> None:
        """Load the model now (start-up) rather than on the first request."""
        self._loaded()

    def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self._loaded().encode(
            list(texts),
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def _loaded(self) -> SentenceTransformer:
        with self._load_lock:
            if self._model is None:
                self._model = self._load_model()
            return self._model

    def _load_model(self) -> SentenceTransformer:
        log.info("loading embedding model %s", self._name_or_path)
        # No network and nothing downloaded: one line now, not a traceback after retries (and
        # before importing torch, which alone takes seconds).
        ensure_model_obtainable(self._name_or_path)
        from sentence_transformers import SentenceTransformer

        if self._threads > 0:
            set_torch_threads(self._threads)
        try:
            return SentenceTransformer(self._name_or_path, device=self._device)
        except (OSError, ValueError) as error:
            raise ModelUnavailable(
                f"cannot load embedding model {self._name_or_path!r}: {error}. "
                "Set PEITU_EMBEDDING__MODEL to a local model folder (with HF_HUB_OFFLINE=1) "
                "or make sure the machine can reach the model hub."
            ) from error


def set_torch_threads(threads: int) -> None:
    """Use `threads` torch intra-op threads in this process (a process-wide setting).

    Measured on a 2-core machine with the other core busy: m3e-small encodes several times
    faster with 1 thread than with 2, whose threads wait on each other (see bench_scale.py)."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
