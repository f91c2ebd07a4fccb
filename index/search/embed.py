"""Sentence-transformers embedder (m3e by default)."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from index.errors import ModelUnavailable
from index.ports import Vectors
from index.search.embed_onnx import (
    ExportFailed,
    OnnxEncoder,
    Precision,
    export_in_child,
    export_key,
    load_export,
    model_fingerprint,
    quantize_export,
)
from index.search.model_source import ensure_model_obtainable

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)


def model_identity(name_or_path: str) -> str:
    """A stable name for the model: a local folder is known by its folder name."""
    path = Path(name_or_path).expanduser()
    return path.name if path.is_dir() else name_or_path


Runtime = Literal["auto", "torch", "onnx", "onnx-int8"]
# Exceptions an export may raise besides ExportFailed (torch's exporter, onnx, the file system).
_EXPORT_ERRORS = (
    ExportFailed,
    RuntimeError,
    OSError,
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
)


class SentenceTransformerEmbedder:
    """Loads the model on first use; `embed` returns normalised float32 rows.

    `runtime` "auto" / "onnx" with an `export_cache`: the model runs in onnxruntime from an
    export kept in that folder (`index.search.embed_onnx`: the same vectors, faster, no torch at
    query time); the first load exports it with torch. "auto" stays on torch when the export
    cannot be made or checked, "onnx" refuses to. "onnx-int8": the export's weights quantized
    to int8, whose vectors are close but not the same: the model is known by another name
    (`<model>+int8`), so an index built by the other precision is not mixed with it."""

    def __init__(
        self,
        name_or_path: str,
        *,
        device: str = "cpu",
        batch_size: int = 32,
        threads: int | Literal["auto"] = 0,
        runtime: Runtime = "torch",
        export_cache: Path | None = None,
    ) -> None:
        self._name_or_path = name_or_path
        self._device = device
        self._batch_size = batch_size
        # intra-op threads (0 = the runtime's own choice: one per core); "auto": one for a
        # query, and for a big encode whichever count `ThreadChoice` measures faster
        self._threads = threads
        self._choice = ThreadChoice(os.cpu_count() or 1) if threads == "auto" else None
        self._runtime: Runtime = runtime if export_cache is not None else "torch"
        self._export_cache = export_cache
        self._model: SentenceTransformer | None = None
        self._onnx: OnnxEncoder | None = None
        self._load_lock = threading.Lock()
        self._interrupted = False  # a Ctrl-C stopped loading the model

    @property
    def model_name(self) -> str:
        identity = model_identity(self._name_or_path)
        return f"{identity}+int8" if self._precision == "int8" else identity

    @property
    def _precision(self) -> Precision:
        return "int8" if self._runtime == "onnx-int8" else "fp32"

    @property
    def runtime(self) -> str:
        """ "onnx" or "torch" once loaded (what runs the model), else the configured choice."""
        if self._onnx is not None:
            return "onnx"
        return "torch" if self._model is not None else self._runtime

    @property
    def dimension(self) -> int:
        """The vector length. Read from the model folder's configuration while the model is not
        loaded (`peitu status` opens the index without torch); loading tells otherwise."""
        loaded = self._model is not None or self._onnx is not None
        if not loaded and (known := configured_dimension(self._name_or_path)):
            return known
        self._ensure_loaded()
        if self._onnx is not None:
            return self._onnx.dimension
        assert self._model is not None
        dim = self._model.get_embedding_dimension()
        if dim is None:
            raise ModelUnavailable(f"embedding model {self.model_name} does not report a dimension")
        return int(dim)

    def load(self) -> None:
        """Load the model now (start-up) rather than on the first request."""
        self._ensure_loaded()

    def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        self._ensure_loaded()
        if self._choice is None or len(texts) < BIG_ENCODE:
            return self._run(texts, self._query_threads())
        threads = self._choice.pick()
        started = time.perf_counter()
        try:
            return self._run(texts, threads)
        finally:
            self._choice.record(threads, len(texts), time.perf_counter() - started)

    def _query_threads(self) -> int:
        if self._threads == "auto":
            return 1
        return self._threads or (os.cpu_count() or 1)

    def _run(self, texts: Sequence[str], threads: int) -> Vectors:
        if self._onnx is not None:
            return self._onnx.encode(texts, threads)
        assert self._model is not None
        if self._threads != "auto":  # a fixed count was set when the model loaded
            return self._encode(self._model, texts)
        set_torch_threads(threads)
        try:
            return self._encode(self._model, texts)
        finally:
            set_torch_threads(1)  # a query (or a small batch) meanwhile: one thread

    def _encode(self, model: SentenceTransformer, texts: Sequence[str]) -> Vectors:
        vectors = model.encode(
            list(texts),
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def _ensure_loaded(self) -> None:
        with self._load_lock:
            if self._model is not None or self._onnx is not None:
                return
            if self._interrupted:
                # A Ctrl-C stopped loading (an export takes minutes on a busy machine): the
                # clean-up that runs on the way out (the indexer embeds what it described) must
                # not start it all over again.
                raise KeyboardInterrupt
            try:
                self._load_or_export()
            except KeyboardInterrupt:
                self._interrupted = True
                raise

    def _load_or_export(self) -> None:
        self._onnx = self._cached_export(self._precision)
        if self._onnx is not None:
            return
        if self._runtime != "torch" and self._export_cache is not None:
            model = None
            if self._fingerprint() is None:  # a hub model not downloaded yet: torch fetches it
                model = self._load_model()
            self._onnx = self._export(self._export_cache)
            self._model = None if self._onnx is not None else model
        if self._onnx is None and self._model is None:
            self._model = self._load_model()

    def _fingerprint(self) -> str | None:
        folder = _model_folder(self._name_or_path)
        return model_fingerprint(folder) if folder is not None else None

    def _cached_export(self, precision: Precision) -> OnnxEncoder | None:
        if self._runtime == "torch" or self._export_cache is None:
            return None
        fingerprint = self._fingerprint()
        if fingerprint is None:  # a hub model not downloaded yet: torch downloads it first
            return None
        key = export_key(fingerprint, precision)
        encoder = load_export(self._export_cache, key, self._batch_size)
        if encoder is not None and precision == self._precision:
            log.info("embedding model %s runs in onnxruntime (exported)", self.model_name)
        return encoder

    def _export(self, cache: Path) -> OnnxEncoder | None:
        """The export this runtime runs, made now (int8 from the fp32 export); None when
        "auto" could not make it (then torch runs the model)."""
        try:
            encoder = self._make_export(cache)
        except _EXPORT_ERRORS as error:
            if self._runtime != "auto":
                raise ModelUnavailable(
                    f"embedding model {self.model_name} cannot run in onnxruntime: {error}. "
                    "Set PEITU_EMBEDDING__RUNTIME=auto (or torch) to run it with torch."
                ) from error
            log.warning("embedding model %s stays on torch: %s", self.model_name, error)
            return None
        facts = encoder.facts
        log.info(
            "embedding model %s runs in onnxruntime (%s; against sentence-transformers: largest "
            "difference %.1g, lowest cosine %.4f)",
            self.model_name,
            facts.precision,
            facts.largest_difference,
            facts.lowest_cosine,
        )
        return encoder

    def _make_export(self, cache: Path) -> OnnxEncoder:
        fingerprint = self._fingerprint()
        if fingerprint is None:
            raise ExportFailed("the model's files are not in a folder or the hub cache")
        fp32 = self._cached_export("fp32")
        if fp32 is None:
            key = export_key(fingerprint, "fp32")
            log.info(
                "exporting embedding model %s for onnxruntime (once, into %s)",
                self.model_name,
                cache,
            )
            export_in_child(self._name_or_path, cache, key, self._batch_size)
            fp32 = load_export(cache, key, self._batch_size)
            if fp32 is None:
                raise ExportFailed(f"the export in {cache / key} cannot be read")
        if self._precision == "fp32":
            return fp32
        log.info("quantizing embedding model %s to int8 (once, into %s)", self.model_name, cache)
        return quantize_export(fp32, cache, export_key(fingerprint, "int8"), self._batch_size)

    def _load_model(self) -> SentenceTransformer:
        log.info("loading embedding model %s", self._name_or_path)
        # No network and nothing downloaded: one line now, not a traceback after retries (and
        # before importing torch, which alone takes seconds).
        ensure_model_obtainable(self._name_or_path)
        from sentence_transformers import SentenceTransformer

        if self._threads == "auto":
            set_torch_threads(1)
        elif self._threads > 0:
            set_torch_threads(self._threads)
        try:
            return SentenceTransformer(self._name_or_path, device=self._device)
        except (OSError, ValueError) as error:
            raise ModelUnavailable(
                f"cannot load embedding model {self._name_or_path!r}: {error}. "
                "Set PEITU_EMBEDDING__MODEL to a local model folder (with HF_HUB_OFFLINE=1) "
                "or make sure the machine can reach the model hub."
            ) from error


# sentence-transformers modules (modules.json "type", last part) that leave the vector length as
# it is; any module not named here or below makes the folder's dimension unknown (load instead).
_SAME_LENGTH = frozenset({"Normalize", "Dropout"})
_LEGACY_POOLING_MODES = (
    "pooling_mode_cls_token",
    "pooling_mode_max_tokens",
    "pooling_mode_mean_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)


def configured_dimension(name_or_path: str) -> int | None:
    """The vector length the model will produce, read from its files without loading it: a
    local folder, or a hub model already in the cache. None when the files do not say for sure
    (a hub model not downloaded, a module type not known here): then only loading tells."""
    folder = _model_folder(name_or_path)
    if folder is None:
        return None
    try:
        return folder_dimension(folder)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def folder_dimension(folder: Path) -> int | None:
    """As sentence-transformers decides it: the last module that has a dimension (Dense: its
    `out_features`; Pooling: the token dimension times its modes; Transformer: `hidden_size`).
    A folder without modules.json is a plain transformer that gets mean pooling."""
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return _transformer_dimension(folder)
    modules: list[dict[str, Any]] = json.loads(modules_file.read_text(encoding="utf-8"))
    for module in reversed(modules):
        kind = str(module["type"]).rsplit(".", 1)[-1]
        if kind in _SAME_LENGTH:
            continue
        return _module_dimension(kind, folder / str(module.get("path", "")))
    return None


def _module_dimension(kind: str, folder: Path) -> int | None:
    if kind == "Transformer":
        return _transformer_dimension(folder)
    if kind not in ("Dense", "Pooling"):
        return None
    config = _json_object(folder / "config.json")
    if kind == "Dense":
        return _positive(config["out_features"])
    token_dimension = config.get("embedding_dimension", config.get("word_embedding_dimension"))
    mode = config.get("pooling_mode")
    if mode is None:
        modes = max(1, sum(bool(config.get(key)) for key in _LEGACY_POOLING_MODES))
    else:
        modes = 1 if isinstance(mode, str) else len(mode)
    dimension = _positive(token_dimension)
    return None if dimension is None else modes * dimension


def _transformer_dimension(folder: Path) -> int | None:
    config = _json_object(folder / "config.json")
    if any(key in config for key in ("projection_dim", "embedding_dim")):
        return None  # heads that may project elsewhere: sentence-transformers decides
    return _positive(config.get("hidden_size"))


def _json_object(path: Path) -> dict[str, Any]:
    value = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(value, dict):
        raise ValueError(f"{path} is not a JSON object")
    return value


def _positive(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _model_folder(name_or_path: str) -> Path | None:
    """The folder holding the model's files: the local folder, or the hub cache's snapshot."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(name_or_path, "config.json")
    except ValueError:  # not a hub name
        return None
    return Path(found).parent if isinstance(found, str) else None


BIG_ENCODE = 32  # texts in one call from which "auto" measures its thread counts
_RETRY_EVERY = 6  # big encodes between two tries of the count not in use


class ThreadChoice:
    """The torch thread count for big encodes, chosen by measuring: one thread, or one per
    core. Both are tried first, then the faster (texts/s) is used and the other tried again
    every `_RETRY_EVERY` calls, so a neighbour that starts or stops using a core is followed.
    On this 2-core machine with the other core busy, two threads encode ~1.5-4x slower than one
    (they wait on each other); with both cores free, ~1.8x faster (bench/bench_scale.py)."""

    def __init__(self, cores: int) -> None:
        self._counts = (1, cores) if cores > 1 else (1,)
        self._rate: dict[int, float] = {}  # threads -> texts/s of its latest big encode
        self._calls = 0

    def pick(self) -> int:
        self._calls += 1
        untried = [n for n in self._counts if n not in self._rate]
        if untried:
            return untried[0]
        best = max(self._counts, key=lambda n: self._rate[n])
        if self._calls % _RETRY_EVERY == 0:
            return next(n for n in self._counts if n != best) if len(self._counts) > 1 else best
        return best

    def record(self, threads: int, texts: int, seconds: float) -> None:
        self._rate[threads] = texts / max(seconds, 1e-6)


def set_torch_threads(threads: int) -> None:
    """Use `threads` torch intra-op threads in this process (a process-wide setting).

    Measured on a 2-core machine with the other core busy: m3e-small encodes several times
    faster with 1 thread than with 2, whose threads wait on each other (see bench_scale.py)."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
