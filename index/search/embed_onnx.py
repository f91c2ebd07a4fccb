"""The sentence encoder in onnxruntime: the vectors sentence-transformers gives, faster, and with
no torch in the process once the model is exported.

The transformer is exported once per model (`export_encoder`, which needs torch and the `onnx`
package) into `<cache>/<fingerprint>/`: `model.onnx` (token ids -> last hidden state),
`tokenizer.json` and `encoder.json` (pooling, sequence limit, dimension, and how far the export's
vectors were from sentence-transformers' on the probe texts). The fingerprint is the model's
content (its files' names and SHA-256), so one export serves every data folder and every clone
of the same model, and a changed or re-downloaded model with other files is exported again. An
export whose vectors differ from sentence-transformers' by more than `TOLERANCE` is not kept:
such a model stays on torch. One process exports a key at a time (a lock file beside it); the
one that gets the lock first removes what a killed export left, and a process that waited for
it uses its export. int8 (`quantize_export`) is made from the fp32 export, without torch: a run
killed while quantizing starts again from the kept fp32 export.

Measured on m3e-small (2,000 captions, this 2-core CPU): cosine to sentence-transformers' vectors
1.000000 (min), the same top-10 for 500 caption queries, 1.7-2.4x the texts/s of torch at one or
two threads; the export takes 7-8 s (loading and checking included) and 95 MB.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
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
    """A name for the model's content: its files' relative paths and SHA-256 digests. The same
    model in another folder (another clone, the hub cache) has the same name."""
    digest = hashlib.sha256(f"{FORMAT}".encode())
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"|{path.relative_to(folder)}:{_file_digest(path)}".encode())
    return digest.hexdigest()[:20]


def _file_digest(path: Path) -> str:
    stat = path.stat()
    return _content_digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _content_digest(path: str, size: int, mtime_ns: int) -> str:
    """SHA-256 of a file, once per process for a given size and modification time (~0.1 s for
    m3e-small's 96 MB here)."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


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

    @property
    def folder(self) -> Path:
        return self._folder

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
    tolerance: float | None = None,
) -> OnnxEncoder:
    """Export a loaded sentence-transformers model (fp32), check it on `PROBES`, and keep it
    under `cache/key` (written aside and moved into place: a crash leaves no half export; a
    process that waited for another's export of the same key uses that one)."""
    pooling = _pooling(model)
    with _exporting(cache, key) as done:
        if done is not None:
            return OnnxEncoder(cache / key, done, batch_size)
        work = Path(tempfile.mkdtemp(prefix=f".{key}.work-", dir=cache))
        try:
            _write_fp32(model, work / MODEL_FILE)
            _save_tokenizer(model, work)
            expected = model.encode(
                list(PROBES),
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            limit = model.max_seq_length
            if limit is None:
                raise ExportFailed("the model states no sequence limit")
            facts = EncoderFacts(pooling, int(limit), int(expected.shape[1]), 0.0, source)
            checked = _checked(work, facts, expected, batch_size, tolerance)
            return _keep(work, cache / key, checked, batch_size)
        finally:
            shutil.rmtree(work, ignore_errors=True)


def quantize_export(fp32: OnnxEncoder, cache: Path, key: str, batch_size: int) -> OnnxEncoder:
    """The int8 export of an fp32 export (no torch): its weights quantized per channel, checked
    against the fp32 export's vectors on `PROBES` (within `TOLERANCE` of sentence-transformers').

    `reduce_range` keeps the weights to 7 bits: without VNNI (AVX2-only CPUs, e.g. many AMD EPYC
    and older Intel) onnxruntime's int8 kernels saturate on full-range weights, and m3e-small's
    lowest cosine on the probes fell to 0.77; with it, 0.995 here."""
    with _exporting(cache, key) as done:
        if done is not None:
            return OnnxEncoder(cache / key, done, batch_size)
        work = Path(tempfile.mkdtemp(prefix=f".{key}.work-", dir=cache))
        try:
            _quantize(fp32.folder / MODEL_FILE, work / MODEL_FILE)
            shutil.copyfile(fp32.folder / TOKENIZER_FILE, work / TOKENIZER_FILE)
            expected = fp32.encode(PROBES)
            facts = replace(fp32.facts, precision="int8", largest_difference=0.0)
            return _keep(work, cache / key, _checked(work, facts, expected, batch_size), batch_size)
        finally:
            shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def _exporting(cache: Path, key: str) -> Iterator[EncoderFacts | None]:
    """Hold the lock of `key`'s export: yields the facts of a complete export another process
    made meanwhile, or None (then the work folders a killed export left are gone)."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f".{key}.lock", "a+b") as lock:
        _lock_file(lock.fileno())
        done = read_facts(cache / key)
        if done is None:
            _remove_leftovers(cache, key)
        yield done


def export_in_child(source: str, cache: Path, key: str, batch_size: int) -> None:
    """Export the model `source` (fp32) into `cache/key` in a child process, and wait for it.

    A Ctrl-C stops it at once: torch's exporter runs in native code for most of its minutes,
    where Python cannot take the signal (and a KeyboardInterrupt raised inside it could crash
    the interpreter); here the child is killed and what it left is removed. The parent never
    loads the model for torch when the export succeeds. ExportFailed with the child's reason."""
    argv = [sys.executable, "-m", "index.search.embed_onnx", source, str(cache), key]
    argv += [str(batch_size), repr(TOLERANCE), str(os.getpid())]
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, errors = child.communicate()
    except BaseException:  # Ctrl-C, or the thread asked to stop: the export stops with us
        child.kill()
        child.wait()
        _remove_leftovers_unless_busy(cache, key)
        raise
    if child.returncode != 0:
        lines = [line for line in errors.splitlines() if line.strip()]
        raise ExportFailed(lines[-1] if lines else f"the exporter ended with {child.returncode}")


def _exit_with_parent(parent: int) -> None:
    """In the child: end when the parent is gone (killed: it cannot kill us any more)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _export_main(argv: Sequence[str]) -> int:
    """`python -m index.search.embed_onnx SOURCE CACHE KEY BATCH TOLERANCE PARENT_PID`."""
    source, cache, key, batch, tolerance, parent = argv
    _exit_with_parent(int(parent))
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(source, device="cpu")
        export_encoder(model, source, Path(cache), key, int(batch), float(tolerance))
    except (ExportFailed, OSError, ValueError, RuntimeError, TypeError, KeyError) as error:
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        return 3
    return 0


def _remove_leftovers_unless_busy(cache: Path, key: str) -> None:
    """What a killed export of `key` left, unless another process exports it now (its lock is
    not waited for: a Ctrl-C must end the command at once)."""
    try:
        import fcntl
    except ImportError:
        return
    with open(cache / f".{key}.lock", "a+b") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return
        _remove_leftovers(cache, key)


def _remove_leftovers(cache: Path, key: str) -> None:
    for leftover in cache.glob(f".{key}.work-*"):
        log.info("removing %s, left by an export that was stopped", leftover)
        shutil.rmtree(leftover, ignore_errors=True)


def _lock_file(descriptor: int) -> None:
    """Wait for the exclusive lock of an open file (released when the process dies)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no other process is waited for
        return
    fcntl.flock(descriptor, fcntl.LOCK_EX)


def _save_tokenizer(model: SentenceTransformer, folder: Path) -> None:
    tokenizer = model.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise ExportFailed("the model's tokenizer has no fast (tokenizer.json) form")
    tokenizer.backend_tokenizer.save(str(folder / TOKENIZER_FILE))


def _checked(
    work: Path,
    facts: EncoderFacts,
    expected: Vectors,
    batch_size: int,
    tolerance: float | None = None,
) -> EncoderFacts:
    """`facts` with how far the export in `work` is from `expected` on `PROBES`; ExportFailed
    when too far (fp32: more than `tolerance`, default `TOLERANCE`)."""
    got = OnnxEncoder(work, facts, batch_size).encode(PROBES)
    checked = replace(
        facts,
        largest_difference=float(np.max(np.abs(got - expected))),
        model_bytes=(work / MODEL_FILE).stat().st_size,
        lowest_cosine=float(np.min(np.sum(got * expected, axis=1))),
    )
    too_far = checked.precision == "fp32" and checked.largest_difference > (
        TOLERANCE if tolerance is None else tolerance
    )
    if too_far or not checked.close_enough:
        raise ExportFailed(
            f"onnxruntime's {checked.precision} vectors are too far from sentence-transformers' "
            f"(largest difference {checked.largest_difference:.2g}, "
            f"lowest cosine {checked.lowest_cosine:.4f})"
        )
    return checked


def _keep(work: Path, final: Path, facts: EncoderFacts, batch_size: int) -> OnnxEncoder:
    (work / FACTS_FILE).write_text(facts.to_json(), encoding="utf-8")
    if final.exists():  # an unreadable or unchecked export: ours replaces it
        shutil.rmtree(final, ignore_errors=True)
    os.rename(work, final)
    return OnnxEncoder(final, facts, batch_size)


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


def _quantize(fp32: Path, path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.disable(logging.WARNING)  # its advice to "run pre-processing" goes to the root log
    try:
        quantize_dynamic(
            str(fp32), str(path), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True
        )
    finally:
        logging.disable(logging.NOTSET)


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


if __name__ == "__main__":
    raise SystemExit(_export_main(sys.argv[1:]))
