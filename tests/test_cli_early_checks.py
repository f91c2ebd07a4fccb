"""Cheap mistakes are answered before any model is looked for or loaded, in Chinese (English
when the locale asks).

The embedding model named here does not exist and the hub is offline: had the command reached
the model, it would fail on the model. Seeing the mistake's own line proves the order. An empty
index needs the real model folder (the model is looked for before the index is opened): there
`-X importtime` shows that no torch, sentence-transformers or onnxruntime was imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from index.search.embed_onnx import model_fingerprint
from tests.support.core_fixtures import SmallLibrary

ROOT = Path(__file__).resolve().parents[1]


def _peitu(
    tmp_path: Path, *args: str, model: Path | None = None, **extra: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PEITU_", "DASHSCOPE_"))}
    env.update(
        HF_HUB_OFFLINE="1",
        PEITU_LANG="zh",
        PEITU_DATA_DIR=str(tmp_path / "data"),
        PEITU_EMBEDDING__MODEL=str(model or tmp_path / "no-such-model"),
        PEITU_EMBEDDING__EXPORT_DIR=str(tmp_path / "exports"),
        PEITU_RERANK__ENABLED="false",
    )
    env.update(extra)
    if "XDG_CACHE_HOME" in extra:  # the default place: the user's cache
        del env["PEITU_EMBEDDING__EXPORT_DIR"]
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "cli.main", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_wrong_library_is_named_before_the_model_is_looked_for(tmp_path: Path) -> None:
    proc = _peitu(tmp_path, "index", "--library", str(tmp_path / "missing"))
    assert proc.returncode == 1
    assert _said(proc) == [
        f"peitu: 图库文件夹不存在或不是文件夹：{(tmp_path / 'missing').resolve()}"
    ]


def test_no_library_at_all_is_named_before_the_model(tmp_path: Path) -> None:
    proc = _peitu(tmp_path, "index")
    assert proc.returncode == 1
    assert _said(proc) == [
        "peitu: 还没有设置图库：设置 PEITU_LIBRARY=照片文件夹，或加 --library 照片文件夹"
    ]


def _said(proc: subprocess.CompletedProcess[str]) -> list[str]:
    """stderr without -X importtime's lines."""
    return [
        line for line in proc.stderr.strip().splitlines() if not line.startswith("import time:")
    ]


def _imported(proc: subprocess.CompletedProcess[str]) -> set[str]:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("import time:")]
    return {line.rsplit("|", 1)[1].strip() for line in lines}


def test_a_missing_descriptions_file_is_named_before_the_model(tmp_path: Path) -> None:
    library = tmp_path / "photos"
    library.mkdir()
    missing = tmp_path / "captions.jsonl"
    proc = _peitu(tmp_path, "index", "--library", str(library), "--descriptions", str(missing))
    assert proc.returncode == 1
    assert _said(proc) == [f"peitu: 找不到描述文件：{missing}"]


def test_recommend_arguments_are_checked_before_the_model(tmp_path: Path) -> None:
    missing = tmp_path / "texts.txt"
    no_text = 'peitu: 请给出要配图的文字，例如：peitu recommend "今天蓝天白云"（或用 --batch 文件）'
    cases = {
        ("recommend",): no_text,
        ("recommend", ""): no_text,
        ("recommend", " \u3000\t"): no_text,  # blank, a full-width space too
        ("recommend", "海边", "--top-k", "0"): "peitu: --top-k 至少是 1",
        ("recommend", "--batch", str(missing)): f"peitu: 找不到文字文件：{missing}",
        ("similar", str(tmp_path / "p.jpg")): (
            f"peitu: 找不到图片文件：{tmp_path / 'p.jpg'}（也不是图库里照片的 photo_id）"
        ),
    }
    for args, line in cases.items():
        proc = _peitu(tmp_path, *args)
        assert proc.returncode == 1
        assert _said(proc) == [line], args


def test_english_when_the_locale_asks(tmp_path: Path) -> None:
    proc = _peitu(tmp_path, "recommend", "--top-k", "0", "海边", PEITU_LANG="", LANG="en_US.UTF-8")
    assert _said(proc) == ["peitu: --top-k must be at least 1"]
    proc = _peitu(tmp_path, "--help", PEITU_LANG="", LC_ALL="en_GB.UTF-8", LANG="zh_CN.UTF-8")
    assert proc.stdout.startswith("usage: peitu") and "find photos" in proc.stdout


def test_a_mistyped_command_or_option_gets_the_closest(tmp_path: Path) -> None:
    proc = _peitu(tmp_path, "idnex")
    assert proc.returncode == 2 and _said(proc)[0].startswith("用法：peitu")
    assert _said(proc)[-1].endswith("。您是不是想输入 index？")
    proc = _peitu(tmp_path, "recommend", "海边", "--top_k", "3")
    assert _said(proc)[-1] == "peitu: 错误：不认识的参数：--top_k 3。您是不是想输入 --top-k？"
    proc = _peitu(tmp_path, "serve", "--help")
    assert "/docs" not in proc.stdout and "/openapi.json" in proc.stdout


def test_an_empty_index_is_refused_before_the_model_loads(tmp_path: Path, m3e_path: Path) -> None:
    for args in (("recommend", "周末去海边"), ("similar", "0" * 64)):
        proc = _peitu(tmp_path, *args, model=m3e_path)
        assert proc.returncode == 1, proc.stderr
        assert [line for line in _said(proc) if line.startswith("peitu:")] == [
            "peitu: 索引里还没有照片。先建索引：peitu index --library 照片文件夹"
            "（没有视觉模型 API key 时自动用离线描述）；网页上是 索引管理 → 开始索引"
        ]
        loaded = _imported(proc) & {"torch", "sentence_transformers", "onnxruntime"}
        assert loaded == set(), args
    assert not (tmp_path / "exports").exists()  # nothing exported for an empty index


def test_a_second_data_folder_reuses_the_first_ones_export(
    tmp_path: Path, m3e_path: Path, small_library: SmallLibrary
) -> None:
    """The export lives in the user's cache (XDG_CACHE_HOME here), keyed by the model's
    content: a second data folder runs the model without exporting it again."""
    cache = tmp_path / "cache"
    runs = []
    for name in ("first", "second"):
        env_extra = {"XDG_CACHE_HOME": str(cache), "PEITU_DATA_DIR": str(tmp_path / name)}
        proc = _peitu(
            tmp_path, "index", "--library", str(small_library.root),
            "--descriptions", str(small_library.descriptions), model=m3e_path, **env_extra,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        runs.append(proc)
    first, second = (_said(run) for run in runs)
    assert any("exporting embedding model m3e-small" in line for line in first)
    assert not any("exporting" in line for line in second)
    assert any("runs in onnxruntime (exported)" in line for line in second)
    exports = cache / "peitu" / "encoders"
    assert [p.name for p in exports.iterdir() if not p.name.startswith(".")] == [
        model_fingerprint(m3e_path)
    ]
    assert "sentence_transformers" not in _imported(runs[1])  # the model was never loaded
