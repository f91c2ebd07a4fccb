"""The sentence encoder in onnxruntime: the vectors sentence-transformers gives, faster, and with
no torch in the process once the model is exported.

The transformer is exported once per model (`export_encoder`, which needs torch and the `onnx`
package) into `<cache>/<fingerprint>/`: `model.onnx` (token ids -> last hidden state),
`tokenizer.json` and `encoder.json` (pooling, sequence limit, dimension, and how far the export's
vectors were from sentence-transformers' on the probe texts). The fingerprint covers the model's
files, so a changed or re-downloaded model is exported again. An export whose vectors differ from
sentence-transformers' by more than `TOLERANCE` is not kept: such a model stays on torch.

Measured on m3e-small (2,000 captions, this 2-core CPU): cosine to sentence-transformers' vectors
1.000000 (min), the same top-10 for 500 caption queries, 1.7-2.4x the texts/s of torch at one or
two threads; the export takes 7-8 s (loading and checking included) and 95 MB.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from index.errors import ModelUnavailable
from index.ports import Vectors

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

FORMAT = 1  # of the folder's files; a new format exports again
TOLERANCE = 1e-4  # largest |difference| of a unit vector's component against sentence-transformers
# int8 (weights quantized per channel, activations per batch) cannot be that close; its vectors
# are another model's. Measured on m3e-small, 2,000 captions: cosine to fp32 0.998 mean, 0.996
# lowest; the same eval figures within a query; 3.6x torch's texts/s on one thread. Activations
# are scaled per batch, so a text's vector depends a little on its batch: the empty probe beside
# the long one gets 0.983 (0.996 alone).
INT8_MIN_COSINE = 0.975
Precision = Literal["fp32", "int8"]
MODEL_FILE, TOKENIZER_FILE, FACTS_FILE = "model.onnx", "tokenizer.json", "encoder.json"
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_POOLINGS = ("mean", "cls")
# Checked against sentence-transformers at export: short and long Chinese, English, digits,
# emoji, an empty string, and a text longer than most models' sequence limit.
PROBES = (
    "今天蓝天白云",
    "一只黑狗在草地上奔跑，嘴里叼着一个红色的飞盘。",
    "两个孩子在海边堆沙堡，远处有几艘帆船。夕阳把天空染成橙色。",
    "A man rides a bicycle down a muddy trail in 2024 😀",
    "",
    "下雪了" * 200,
)


class ExportFailed(RuntimeError):
    """The model cannot be run by onnxruntime as sentence-transformers runs it."""


@dataclass(frozen=True)
class EncoderFacts:
    """What `encoder.json` records of an export."""

    pooling: str
    max_seq_length: int
    dimension: int
    largest_difference: float  # against sentence-transformers on `PROBES`
    source: str  # the model as configured (its name or folder)
    model_bytes: int = 0  # the size model.onnx had when written: a cut file is not used
    precision: str = "fp32"
    lowest_cosine: float = 1.0  # against sentence-transformers on `PROBES`

    @property
    def close_enough(self) -> bool:
        if self.precision == "int8":
            return self.lowest_cosine >= INT8_MIN_COSINE
        return self.precision == "fp32" and self.largest_difference <= TOLERANCE

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **self.__dict__}, ensure_ascii=False, indent=1)


def model_fingerprint(folder: Path) -> str:
    """A name for the exact model files in `folder` (paths, sizes, modification times)."""
    digest = hashlib.sha256(f"{FORMAT}|{folder.resolve()}".encode())
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"|{path.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:20]


def read_facts(folder: Path) -> EncoderFacts | None:
    """The facts of a complete export in `folder`, or None (absent, partial, another format)."""
    try:
        raw = json.loads((folder / FACTS_FILE).read_text(encoding="utf-8"))
        if raw.pop("format") != FORMAT:
            return None
        facts = EncoderFacts(**raw)
        size = (folder / MODEL_FILE).stat().st_size
    except (OSError, ValueError, TypeError, KeyError):
        return None
    complete = size == facts.model_bytes and (folder / TOKENIZER_FILE).is_file()
    checked = facts.pooling in _POOLINGS and facts.close_enough
    return facts if complete and checked else None


class OnnxEncoder:
    """Runs an exported encoder: tokenise, run the transformer, pool, normalise.

    One onnxruntime session of one intra-op thread, made on first use: the model's weights are
    held once (~95 MB for m3e-small; a session per thread count held them twice, ~150 MB more
    in a process that encodes with both). More threads run batches side by side on it."""

    def __init__(self, folder: Path, facts: EncoderFacts, batch_size: int) -> None:
        from tokenizers import Tokenizer

        self._folder = folder
        self.facts = facts
        self._batch_size = batch_size
        self._tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        self._tokenizer.enable_truncation(facts.max_seq_length)
        self._tokenizer.no_padding()
        self._session: Any = None
        self._lock = threading.Lock()

    @property
    def dimension(self) -> int:
        return self.facts.dimension

    def session(self) -> Any:
        """The session (opened on first use)."""
        with self._lock:
            if self._session is None:
                self._session = _session(self._folder / MODEL_FILE, 1)
            return self._session

    def encode(self, texts: Sequence[str], threads: int = 1) -> Vectors:
        """Unit vectors for `texts`, in order; batches of similar length, as
        sentence-transformers makes them (longest first), `threads` of them at a time."""
        session = self.session()
        encodings = self._tokenizer.encode_batch(list(texts))
        order = np.argsort([-len(e.ids) for e in encodings], kind="stable")
        out = np.empty((len(texts), self.facts.dimension), dtype=np.float32)
        batches = [order[i : i + self._batch_size] for i in range(0, len(texts), self._batch_size)]

        def run(rows: Any) -> None:
            out[rows] = self._pooled(session, [encodings[i] for i in rows])

        if threads <= 1 or len(batches) == 1:
            for rows in batches:
                run(rows)
        else:  # onnxruntime runs a session from several threads at once
            with ThreadPoolExecutor(threads, thread_name_prefix="encode") as pool:
                list(pool.map(run, batches))
        return out

    def _pooled(self, session: Any, encodings: Sequence[Any]) -> Vectors:
        width = max(len(e.ids) for e in encodings)
        feeds = {name: np.zeros((len(encodings), width), dtype=np.int64) for name in _INPUTS}
        for row, encoding in enumerate(encodings):
            length = len(encoding.ids)
            feeds["input_ids"][row, :length] = encoding.ids
            feeds["attention_mask"][row, :length] = encoding.attention_mask
            feeds["token_type_ids"][row, :length] = encoding.type_ids
        hidden = session.run(None, feeds)[0]
        if self.facts.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = feeds["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return np.asarray(pooled / np.maximum(norms, 1e-12), dtype=np.float32)


def _session(model: Path, threads: int) -> Any:
    try:
        import onnxruntime as ort
    except ImportError as error:
        raise ModelUnavailable(f"the onnx encoder needs onnxruntime: {error}") from error
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Threads that spin between batches take a core from whatever shares the machine.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def load_export(cache: Path, key: str, batch_size: int) -> OnnxEncoder | None:
    """The exported encoder of a model, when a complete, checked export is cached; its session
    is opened now."""
    folder = cache / key
    facts = read_facts(folder)
    if facts is None:
        return None
    encoder = OnnxEncoder(folder, facts, batch_size)
    try:
        encoder.session()  # a file onnxruntime cannot read is exported again, now
    except Exception as error:  # onnxruntime's own classes derive from Exception: any is a miss
        log.warning("the exported encoder in %s is unreadable (%s): exporting again", folder, error)
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return encoder


def export_key(fingerprint: str, precision: Precision) -> str:
    """The folder name of a model's export at a precision."""
    return fingerprint if precision == "fp32" else f"{fingerprint}-{precision}"


def export_encoder(
    model: SentenceTransformer,
    source: str,
    cache: Path,
    key: str,
    batch_size: int,
    precision: Precision = "fp32",
) -> OnnxEncoder:
    """Export a loaded sentence-transformers model (int8: then quantize its weights), check it
    on `PROBES`, and keep it under `cache/key` (written aside and moved into place: a crash
    leaves no half export, and two processes exporting at once keep one)."""
    pooling = _pooling(model)
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache))
    try:
        _write_model(model, work / MODEL_FILE, precision)
        tokenizer = model.tokenizer
        if not getattr(tokenizer, "is_fast", False):
            raise ExportFailed("the model's tokenizer has no fast (tokenizer.json) form")
        tokenizer.backend_tokenizer.save(str(work / TOKENIZER_FILE))
        expected = model.encode(
            list(PROBES), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        limit = model.max_seq_length
        if limit is None:
            raise ExportFailed("the model states no sequence limit")
        provisional = EncoderFacts(pooling, int(limit), int(expected.shape[1]), 0.0, source)
        got = OnnxEncoder(work, provisional, batch_size).encode(PROBES)
        facts = replace(
            provisional,
            largest_difference=float(np.max(np.abs(got - expected))),
            model_bytes=(work / MODEL_FILE).stat().st_size,
            precision=precision,
            lowest_cosine=float(np.min(np.sum(got * expected, axis=1))),
        )
        if not facts.close_enough:
            raise ExportFailed(
                f"onnxruntime's {precision} vectors are too far from sentence-transformers' "
                f"(largest difference {facts.largest_difference:.2g}, "
                f"lowest cosine {facts.lowest_cosine:.4f})"
            )
        (work / FACTS_FILE).write_text(facts.to_json(), encoding="utf-8")
        return OnnxEncoder(_move_into_place(work, cache / key), facts, batch_size)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _move_into_place(work: Path, final: Path) -> Path:
    try:
        os.rename(work, final)
    except OSError:
        if read_facts(final) is None:  # not another process's complete export: ours replaces it
            shutil.rmtree(final, ignore_errors=True)
            os.rename(work, final)
    return final


def _pooling(model: SentenceTransformer) -> str:
    """ "mean" or "cls" when the model is a transformer, that pooling, and at most a Normalize;
    anything else (a Dense head, max pooling) is not exported."""
    modules: list[Any] = list(model)
    kinds = [type(module).__name__ for module in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or any(k != "Normalize" for k in kinds[2:]):
        raise ExportFailed(f"modules {kinds} are not a transformer with plain pooling")
    pooling = modules[1]
    mode = getattr(pooling, "pooling_mode", None)  # sentence-transformers 6: a name or names
    if mode is None and hasattr(pooling, "get_pooling_mode_str"):  # older releases
        mode = pooling.get_pooling_mode_str()
    if isinstance(mode, list | tuple) and len(mode) == 1:
        mode = mode[0]
    if mode not in _POOLINGS:
        raise ExportFailed(f"pooling {mode!r} is not exported")
    return str(mode)


def _write_model(model: SentenceTransformer, path: Path, precision: Precision) -> None:
    """The transformer as an ONNX graph at `path`; int8: its weights quantized per channel."""
    if precision == "fp32":
        _write_fp32(model, path)
        return
    fp32 = path.with_name("fp32.onnx")
    _write_fp32(model, fp32)
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.disable(logging.WARNING)  # its advice to "run pre-processing" goes to the root log
    try:
        quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        logging.disable(logging.NOTSET)
    fp32.unlink()


def _write_fp32(model: SentenceTransformer, path: Path) -> None:
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
        import torch
    except ImportError as error:
        raise ExportFailed(f"exporting needs the onnx package: {error}") from error
    first: Any = model[0]
    transformer = first.auto_model.eval()

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.transformer(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    sample = model.tokenizer(["今天蓝天白云", "一只狗"], padding=True, return_tensors="pt")
    if any(name not in sample for name in _INPUTS):
        raise ExportFailed(f"the tokenizer does not give all of {_INPUTS}")
    axes = {name: {0: "batch", 1: "tokens"} for name in (*_INPUTS, "last_hidden_state")}
    # The tracer's warnings (advanced indexing, Python conditions) are about graphs that could
    # differ on other inputs: the export is checked against sentence-transformers instead.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            LastHiddenState().eval(),
            tuple(sample[name] for name in _INPUTS),
            str(path),
            input_names=list(_INPUTS),
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
