"""The embedding model in onnxruntime: exported once from the real m3e-small, checked against
sentence-transformers, reused by later processes without torch, and never trusted when cut,
changed or unreadable."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from index.errors import ModelUnavailable
from index.search import embed_onnx
from index.search.embed import BIG_ENCODE, SentenceTransformerEmbedder
from index.search.embed_onnx import FACTS_FILE, MODEL_FILE, model_fingerprint, read_facts
from tests.support.core_fixtures import SmallLibrary

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [
    "今天蓝天白云，适合出门",
    "一只黑狗在草地上奔跑，嘴里叼着一个红色的飞盘。",
    "两个孩子在海边堆沙堡。远处有几艘帆船，夕阳把天空染成橙色。",
    "周末和朋友去爬山 🏔️ 2024年10月 黄山",
    "A man rides a bicycle down a muddy trail",
    "画面内容：离线模型未能识别",
    "雪" * 600,  # longer than the model's 512-token limit
]


@pytest.fixture(scope="module")
def model_copy(m3e_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the model folder, so changing a file does not touch the shared one."""
    folder = tmp_path_factory.mktemp("model") / "m3e-small"
    shutil.copytree(m3e_path, folder)
    return folder


def _exports(cache: Path) -> list[str]:
    """What the cache holds besides the exports' lock files."""
    return sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock"))


def _onnx(model: Path, cache: Path, runtime: str = "auto") -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(
        str(model),
        runtime=runtime,  # type: ignore[arg-type]
        export_cache=cache,
        threads="auto",
    )


def test_exported_encoder_gives_sentence_transformers_vectors(
    model_copy: Path, embedder: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    onnx = _onnx(model_copy, tmp_path)
    got = onnx.embed(TEXTS)
    assert onnx.runtime == "onnx"
    np.testing.assert_allclose(got, embedder.embed(TEXTS), atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    many = [f"第{i}张：{TEXTS[i % len(TEXTS)]}" for i in range(BIG_ENCODE * 3)]
    np.testing.assert_allclose(onnx.embed(many), embedder.embed(many), atol=1e-4)
    facts = read_facts(tmp_path / model_fingerprint(model_copy))
    assert facts is not None and facts.pooling == "mean" and facts.dimension == 512
    assert facts.largest_difference <= embed_onnx.TOLERANCE
    assert onnx.dimension == 512


def test_a_later_process_runs_the_export_without_torch(model_copy: Path, tmp_path: Path) -> None:
    _onnx(model_copy, tmp_path).load()  # exports
    script = (
        "import sys, json; from pathlib import Path\n"
        "from index.search.embed import SentenceTransformerEmbedder as E\n"
        f"e = E({str(model_copy)!r}, runtime='onnx', export_cache=Path({str(tmp_path)!r}))\n"
        "v = e.embed(['今天蓝天白云'])\n"
        "print(json.dumps([e.runtime, 'torch' in sys.modules, v.shape[1]]))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == ["onnx", False, 512]


def test_a_changed_model_file_is_exported_again(model_copy: Path, tmp_path: Path) -> None:
    _onnx(model_copy, tmp_path).load()
    before = model_fingerprint(model_copy)
    config = model_copy / "config.json"
    config.write_text(config.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    after = model_fingerprint(model_copy)
    assert after != before
    _onnx(model_copy, tmp_path).load()
    assert read_facts(tmp_path / after) is not None


@pytest.mark.parametrize("damage", ["cut model", "no facts", "garbage model of the same size"])
def test_a_damaged_export_is_made_again_not_used(
    model_copy: Path, embedder: SentenceTransformerEmbedder, tmp_path: Path, damage: str
) -> None:
    _onnx(model_copy, tmp_path).load()
    folder = tmp_path / model_fingerprint(model_copy)
    model = folder / MODEL_FILE
    size = model.stat().st_size
    if damage == "cut model":
        model.write_bytes(model.read_bytes()[: size // 3])
    elif damage == "no facts":
        (folder / FACTS_FILE).unlink()
    else:
        model.write_bytes(b"\0" * size)
    assert damage == "garbage model of the same size" or read_facts(folder) is None
    again = _onnx(model_copy, tmp_path)
    np.testing.assert_allclose(again.embed(TEXTS[:3]), embedder.embed(TEXTS[:3]), atol=1e-4)
    assert again.runtime == "onnx"
    assert model.stat().st_size == size and read_facts(folder) is not None


def test_without_the_exporter_auto_stays_on_torch_and_onnx_refuses(
    model_copy: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The export runs in a child process: there `import onnx` finds this module first.
    fake = tmp_path / "without-onnx"
    fake.mkdir()
    (fake / "onnx.py").write_text('raise ImportError("onnx is not installed here")\n')
    monkeypatch.setenv("PYTHONPATH", str(fake))
    with caplog.at_level(logging.WARNING):
        auto = _onnx(model_copy, tmp_path / "auto")
        assert auto.embed(TEXTS[:1]).shape == (1, 512)
    assert auto.runtime == "torch"
    assert "stays on torch" in caplog.text and "onnx package" in caplog.text
    with pytest.raises(ModelUnavailable, match="PEITU_EMBEDDING__RUNTIME"):
        _onnx(model_copy, tmp_path / "strict", runtime="onnx").load()
    assert _exports(tmp_path / "auto") == []  # nothing half-written left behind


def test_an_export_that_disagrees_is_not_kept(
    model_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embed_onnx, "TOLERANCE", -1.0)  # no export can be close enough
    auto = _onnx(model_copy, tmp_path)
    auto.load()
    assert auto.runtime == "torch"
    assert _exports(tmp_path) == []


def test_torch_runtime_never_exports(model_copy: Path, tmp_path: Path) -> None:
    torch_only = _onnx(model_copy, tmp_path, runtime="torch")
    torch_only.load()
    assert torch_only.runtime == "torch" and not list(tmp_path.iterdir())


def test_int8_is_close_smaller_and_known_by_another_name(
    model_copy: Path, embedder: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    int8 = _onnx(model_copy, tmp_path, runtime="onnx-int8")
    got = int8.embed(TEXTS)
    assert int8.runtime == "onnx" and int8.model_name == "m3e-small+int8"
    cosines = np.sum(got * embedder.embed(TEXTS), axis=1)
    # reduce_range: on this AVX2-only CPU (no VNNI) full-range int8 weights gave 0.77
    assert cosines.min() >= 0.99 and cosines.max() < 1.0 - 1e-6
    fp32 = _onnx(model_copy, tmp_path)
    fp32.load()
    assert fp32.model_name == "m3e-small"
    fingerprint = model_fingerprint(model_copy)
    small = (tmp_path / f"{fingerprint}-int8" / MODEL_FILE).stat().st_size
    assert small < (tmp_path / fingerprint / MODEL_FILE).stat().st_size / 3


def test_the_same_model_in_another_folder_has_the_same_fingerprint(
    model_copy: Path, tmp_path: Path
) -> None:
    clone = tmp_path / "another-clone" / "m3e-small"
    shutil.copytree(model_copy, clone, copy_function=shutil.copy)  # new paths, new times
    assert model_fingerprint(clone) == model_fingerprint(model_copy)
    config = clone / "config.json"
    config.write_text(config.read_text(encoding="utf-8").replace("512", "513", 1), encoding="utf-8")
    assert model_fingerprint(clone) != model_fingerprint(model_copy)


def _run_python(script: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )


def test_int8_is_made_from_the_fp32_export_without_torch(model_copy: Path, tmp_path: Path) -> None:
    _onnx(model_copy, tmp_path).load()  # the fp32 export
    script = (
        "import sys, json; from pathlib import Path\n"
        "from index.search.embed import SentenceTransformerEmbedder as E\n"
        f"e = E({str(model_copy)!r}, runtime='onnx-int8', export_cache=Path({str(tmp_path)!r}))\n"
        "v = e.embed(['今天蓝天白云'])\n"
        "print(json.dumps([e.runtime, e.model_name, 'torch' in sys.modules, v.shape[1]]))\n"
    )
    out = _run_python(script)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == ["onnx", "m3e-small+int8", False, 512]
    facts = read_facts(tmp_path / f"{model_fingerprint(model_copy)}-int8")
    assert facts is not None and facts.precision == "int8"
    assert facts.lowest_cosine >= embed_onnx.INT8_MIN_COSINE


def _start_export(model: Path, cache: Path) -> subprocess.Popen[str]:
    script = (
        "from pathlib import Path\n"
        "from index.search.embed import SentenceTransformerEmbedder as E\n"
        f"E({str(model)!r}, runtime='onnx', export_cache=Path({str(cache)!r})).load()\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_work_folder(cache: Path, proc: subprocess.Popen[str]) -> Path:
    """The export's work folder, once the exporting process has made it."""
    for _ in range(2400):  # 120 s: loading the model on a busy machine
        work = [p for p in cache.glob(".*.work-*") if p.is_dir()]
        if work:
            return work[0]
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    raise AssertionError("the export did not start within 120 s")


def test_what_a_killed_export_left_is_removed_by_the_next(model_copy: Path, tmp_path: Path) -> None:
    proc = _start_export(model_copy, tmp_path)
    leftover = _wait_for_work_folder(tmp_path, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert leftover.is_dir()  # a kill runs no clean-up
    again = _onnx(model_copy, tmp_path, runtime="onnx")
    again.load()
    assert again.runtime == "onnx"
    assert _exports(tmp_path) == [model_fingerprint(model_copy)]


def test_ctrl_c_during_the_export_stops_the_command_and_leaves_nothing(
    model_copy: Path, tmp_path: Path, small_library: SmallLibrary
) -> None:
    cache = tmp_path / "exports"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PEITU_", "DASHSCOPE_"))}
    env.update(
        HF_HUB_OFFLINE="1",
        PEITU_DATA_DIR=str(tmp_path / "data"),
        PEITU_EMBEDDING__MODEL=str(model_copy),
        PEITU_EMBEDDING__EXPORT_DIR=str(cache),
        PEITU_LIBRARY=str(small_library.root),
        PEITU_VISUAL__BACKEND="off",
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli.main",
            "index",
            "--descriptions",
            str(small_library.descriptions),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_work_folder(cache, proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)  # it stops; no waiting for the export to end
    assert proc.returncode == 130, (proc.returncode, stderr[-2000:])
    assert "Traceback" not in stderr
    assert _exports(cache) == []  # no half export, no work folder
