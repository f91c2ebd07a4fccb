"""`peitu` without the embedding model: `status` and `--help` import no torch, and `recommend`
asks a running server (`PEITU_SERVER__URL`) instead of loading the model.

Real subprocesses, run under `-X importtime`, which lists every module the command imported;
the server is the real FastAPI app under uvicorn on a free loopback port, over a real index.
Where the model must not even be looked for (recommend through the server), PEITU_EMBEDDING__MODEL
names a folder that does not exist: reaching for it would end the command with the model's line.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from config import load_settings
from index.search.embed import SentenceTransformerEmbedder
from tests.server.conftest import TOKEN, Served, serving_indexed

ROOT = Path(__file__).resolve().parents[1]
ML_MODULES = ("torch", "sentence_transformers", "transformers")
TEXT = "海边的日落"


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, m3e_path: Path, embedder: SentenceTransformerEmbedder
) -> Iterator[Served]:
    """A server over 12 indexed eval photos (imported descriptions), for read-only tests."""
    with serving_indexed(tmp_path_factory.mktemp("cli-fast"), m3e_path, embedder, 12) as served:
        yield served


def _env(served: Served, model: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PEITU_", "DASHSCOPE_"))}
    env.update(
        HF_HUB_OFFLINE="1",
        PEITU_LANG="zh",
        PEITU_DATA_DIR=str(served.settings.data_dir),
        PEITU_LIBRARY=str(served.settings.library),
        PEITU_EMBEDDING__MODEL=str(model),
        PEITU_RERANK__ENABLED="false",
        PEITU_ADMIN_TOKEN=TOKEN,
    )
    env.update(extra)
    return env


class Run:
    """A finished `peitu` run under `-X importtime`: its output and what it imported."""

    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.code = proc.returncode
        self.stdout = proc.stdout
        timing = [line for line in proc.stderr.splitlines() if line.startswith("import time:")]
        self.stderr = [line for line in proc.stderr.splitlines() if line not in timing]
        self.imported = {line.rsplit("|", 1)[1].strip() for line in timing}

    def ml_imported(self) -> list[str]:
        return [name for name in ML_MODULES if name in self.imported]


def _peitu(env: dict[str, str], *args: str) -> Run:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "cli.main", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return Run(proc)


def _without_timings(answer: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in answer.items() if key != "timings_ms"}


def test_status_reads_the_index_without_the_model(served: Served, m3e_path: Path) -> None:
    # a vision key and the reranker on: their LLM clients are not built to read the index
    llm = {"PEITU_RERANK__ENABLED": "true", "PEITU_VISION__API_KEY": "sk-0123456789abcdef"}
    run = _peitu(_env(served, m3e_path, **llm), "status")
    assert run.code == 0, run.stderr
    lines = run.stdout.splitlines()
    # the store's identity (model, dimension) matched: no problem line after these two
    assert len(lines) == 2 and lines[0].startswith("已索引 12 张（图库中 12 张），上次索引：20")
    assert lines[1] == "描述来源：导入 12"
    assert "chromadb" in run.imported  # it did open the index
    assert run.ml_imported() == [] and "openai" not in run.imported


@pytest.mark.parametrize("args", [("--help",), ("recommend", "--help"), ("index", "--help")])
def test_help_imports_no_model(served: Served, tmp_path: Path, args: tuple[str, ...]) -> None:
    run = _peitu(_env(served, tmp_path / "no-such-model"), *args)
    assert run.code == 0 and "用法：peitu" in run.stdout
    assert run.ml_imported() == [] and "chromadb" not in run.imported


def test_recommend_asks_the_running_server(served: Served, tmp_path: Path) -> None:
    env = _env(served, tmp_path / "no-such-model", PEITU_SERVER__URL=served.url)
    run = _peitu(env, "recommend", TEXT, "--no-rerank", "--json")
    assert run.code == 0, run.stderr
    assert run.stderr == [f"peitu: 向 PeiTu 服务器查询：{served.url}"]
    answer = json.loads(run.stdout)
    here = served.app.recommend(TEXT, None, rerank=False).to_dict()
    assert _without_timings(answer) == _without_timings(here) and answer["results"]
    assert list(answer) == list(here)  # the --json contract: the same keys, in order
    assert run.ml_imported() == [] and "chromadb" not in run.imported


def test_recommend_through_the_server_shows_this_machines_files(
    served: Served, tmp_path: Path
) -> None:
    env = _env(served, tmp_path / "no-such-model", PEITU_SERVER__URL=served.url)
    run = _peitu(env, "recommend", TEXT, "--no-rerank", "--top-k", "2", "--closest")
    assert run.code == 0, run.stderr
    here = served.app.recommend(TEXT, 2, rerank=False, closest=True)
    assert served.library is not None
    first = served.library.root / here.results[0].path
    assert run.stdout.splitlines()[0] == f"「{TEXT}」"
    assert f"\n1. {first}  (匹配度 " in run.stdout and "\n2. " in run.stdout


def test_a_batch_goes_to_the_server_line_by_line(served: Served, tmp_path: Path) -> None:
    batch = tmp_path / "texts.txt"
    batch.write_text(f"{TEXT}\n\n   \n孩子们在草地上踢球\n", encoding="utf-8")
    env = _env(served, tmp_path / "no-such-model", PEITU_SERVER__URL=served.url)
    run = _peitu(env, "recommend", "--batch", str(batch), "--no-rerank")
    assert run.code == 0, run.stderr
    answers = [json.loads(line) for line in run.stdout.splitlines()]
    assert [a["query"] for a in answers] == [TEXT, "孩子们在草地上踢球"]
    assert all("results" in a and "error" not in a for a in answers)


def test_a_text_the_server_refuses_is_one_line_of_the_batch(served: Served, tmp_path: Path) -> None:
    batch = tmp_path / "texts.txt"
    batch.write_text(f"{TEXT}\n{'长' * 10_001}\n孩子们在草地上踢球\n", encoding="utf-8")
    env = _env(served, tmp_path / "no-such-model", PEITU_SERVER__URL=served.url)
    run = _peitu(env, "recommend", "--batch", str(batch), "--no-rerank")
    assert run.code == 0, run.stderr
    answers = [json.loads(line) for line in run.stdout.splitlines()]
    assert ["error" in a for a in answers] == [False, True, False]
    assert answers[1]["error"].startswith("body.text: ")


def test_a_refused_token_ends_a_batch(served: Served, tmp_path: Path) -> None:
    batch = tmp_path / "texts.txt"
    batch.write_text(f"{TEXT}\n孩子们在草地上踢球\n", encoding="utf-8")
    env = _env(served, tmp_path / "m", PEITU_SERVER__URL=served.url, PEITU_ADMIN_TOKEN="wrong")
    run = _peitu(env, "recommend", "--batch", str(batch))
    assert run.code == 1 and run.stdout == ""
    assert "refused the token (401" in run.stderr[-1]


def test_a_refused_token_is_an_error_not_a_search_here(served: Served, tmp_path: Path) -> None:
    env = _env(
        served,
        tmp_path / "no-such-model",
        PEITU_SERVER__URL=served.url,
        PEITU_ADMIN_TOKEN="not-the-servers-token-0123456789",
    )
    run = _peitu(env, "recommend", TEXT, "--json")
    assert run.code == 1 and run.stdout == ""
    assert run.stderr[-1].startswith(
        f"peitu: PeiTu 服务器回答了错误（the PeiTu server {served.url} refused the token (401"
    )
    assert run.ml_imported() == []


def test_the_server_checks_the_text_as_the_core_does(served: Served, tmp_path: Path) -> None:
    env = _env(served, tmp_path / "no-such-model", PEITU_SERVER__URL=served.url)
    run = _peitu(env, "recommend", "长" * 10_001, "--json")
    assert run.code == 1 and run.stdout == ""
    assert run.stderr[-1].startswith("peitu: 输入有误（body.text: ")  # the core's InvalidQuery
    assert run.ml_imported() == []
    blank = _peitu(env, "recommend", "   ", "--json")  # a blank text is answered here, at once
    assert blank.code == 1 and blank.stderr == [
        'peitu: 请给出要配图的文字，例如：peitu recommend "今天蓝天白云"（或用 --batch 文件）'
    ]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_with_no_server_answering_it_searches_here(
    served: Served, m3e_path: Path, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    run = _peitu(_env(served, m3e_path, PEITU_SERVER__URL=url), "recommend", TEXT, "--json")
    assert run.code == 0, run.stderr
    notice = [line for line in run.stderr if line.startswith("peitu:")]
    assert len(notice) == 1 and notice[0].startswith(
        f"peitu: PEITU_SERVER__URL 上没有 PeiTu 服务器响应（{url}: "
    )
    assert notice[0].endswith("改在本机搜索（加载模型）")
    here = served.app.recommend(TEXT, None, rerank=False)
    # another process's model: the same photos, floats maybe not to the last bit
    assert [r["photo_id"] for r in json.loads(run.stdout)["results"]] == [
        r.photo_id for r in here.results
    ]
    assert {"onnxruntime", "sentence_transformers"} & run.imported  # the model ran here


def test_a_server_url_without_its_scheme_is_refused_at_start_up() -> None:
    from config import SettingsInvalid

    with pytest.raises(SettingsInvalid, match=r"\(PEITU_SERVER__URL\): must be empty"):
        load_settings(server={"url": "127.0.0.1:8000"})
    assert load_settings(server={"url": "http://127.0.0.1:8000/"}).server.url == (
        "http://127.0.0.1:8000"
    )
