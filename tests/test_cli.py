"""The `peitu` command as a user runs it: a real subprocess, real models over real HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from index.search.embed import SentenceTransformerEmbedder
from index.wiring import build_app
from tests.support.core_fixtures import SettingsFactory, SmallLibrary
from tests.support.openai_server import FakeOpenAIServer

INDEX_KEYS = {
    "scanned",
    "new",
    "unchanged",
    "moved",
    "removed",
    "described",
    "embedded",
    "failed",
    "visual_embedded",
    "visual_failed",
    "dates_ignored",
    "skipped",
}
RESULT_KEYS = {
    "rank", "photo_id", "path", "similarity", "score", "reason", "description", "match", "fits",
    "likeness",
}  # fmt: skip
COLOURS = {
    "blue": (40, 90, 220),
    "green": (40, 170, 60),
    "white": (245, 245, 245),
    "red": (210, 30, 30),
}


def _env(tmp_path: Path, m3e_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PEITU_", "DASHSCOPE_"))}
    env.update(
        HF_HUB_OFFLINE="1",
        PEITU_LANG="zh",
        PEITU_DATA_DIR=str(tmp_path / "data"),
        PEITU_EMBEDDING__MODEL=str(m3e_path),
        PEITU_RERANK__ENABLED="false",
    )
    env.update(extra)
    return env


def peitu(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _json(proc: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    payload = json.loads(lines[0])
    assert isinstance(payload, dict)
    return payload


@pytest.fixture
def colour_library(tmp_path: Path) -> Path:
    library = tmp_path / "colours"
    library.mkdir()
    for name, rgb in COLOURS.items():
        Image.new("RGB", (640, 480), rgb).save(library / f"{name}.jpg", quality=90)
    return library


def test_index_then_recommend_with_the_sidecar_describer(
    tmp_path: Path, m3e_path: Path, small_library: SmallLibrary
) -> None:
    env = _env(tmp_path, m3e_path, PEITU_LIBRARY=str(small_library.root))
    report = _json(peitu(env, "index", "--descriptions", str(small_library.descriptions), "--json"))
    assert set(report) == INDEX_KEYS and report["embedded"] == 30
    target = small_library.photos[3]
    result = _json(peitu(env, "recommend", target.captions[4], "--json"))
    assert set(result) == {
        "query", "reranked", "message", "results", "timings_ms", "nothing_fits", "time_place",
        "notes", "rerank",
    }  # fmt: skip
    assert result["reranked"] is False
    assert result["rerank"] == {"state": "off", "reason": None}  # switched off in the tests
    results = result["results"]
    assert isinstance(results, list) and 1 <= len(results) <= 5
    assert all(set(r) == RESULT_KEYS for r in results)
    assert target.rel_path in [r["path"] for r in results]
    shown = [r["match"] for r in results]  # one order, one score, one rule
    assert shown == sorted(shown, reverse=True) and all(r["fits"] for r in results)
    assert min(shown) >= 50 and all(r["likeness"] is None for r in results)
    closest = peitu(env, "recommend", "?线性代数作业写不完")
    assert closest.returncode == 0 and "最接近，不太合适" in closest.stdout, closest.stdout
    assert "得分" not in closest.stdout and "相似度" not in closest.stdout


def test_index_and_recommend_through_the_vision_and_rerank_endpoints(
    tmp_path: Path, m3e_path: Path, colour_library: Path, openai_server: FakeOpenAIServer
) -> None:
    env = _env(
        tmp_path,
        m3e_path,
        PEITU_LIBRARY=str(colour_library),
        PEITU_VISION__BASE_URL=openai_server.base_url,
        PEITU_VISION__MODEL="fake-vl",
        PEITU_RERANK__BASE_URL=openai_server.base_url,
        PEITU_RERANK__MODEL="fake-chat",
        PEITU_RERANK__ENABLED="true",
        PEITU_SIMILARITY_THRESHOLD="0",
    )
    first = _json(peitu(env, "index", "--json"))
    assert (first["described"], first["embedded"], openai_server.calls["vision"]) == (4, 4, 4)
    second = _json(peitu(env, "index", "--json"))
    assert (second["described"], second["embedded"], second["unchanged"]) == (0, 0, 4)
    assert openai_server.calls["vision"] == 4  # a second run makes no vision call
    again = _json(peitu(env, "index", "--redescribe", "--json"))
    assert (again["described"], openai_server.calls["vision"]) == (4, 8)
    status = peitu(env, "status")
    assert status.returncode == 0 and "描述来源：视觉模型 4" in status.stdout
    result = _json(peitu(env, "recommend", "蓝天大海，海边度假", "--top-k", "2", "--json"))
    assert result["reranked"] is True and openai_server.calls["rerank"] == 1
    assert result["rerank"] == {"state": "used", "reason": None}
    assert not any(note["kind"] == "rerank_failed" for note in result["notes"])
    results = result["results"]
    assert isinstance(results, list)
    assert results[0]["path"] == "blue.jpg"
    assert "蓝天" in results[0]["reason"]


def test_recommend_falls_back_when_the_llm_answers_garbage(
    tmp_path: Path, m3e_path: Path, small_library: SmallLibrary, openai_server: FakeOpenAIServer
) -> None:
    env = _env(tmp_path, m3e_path, PEITU_LIBRARY=str(small_library.root))
    _json(peitu(env, "index", "--descriptions", str(small_library.descriptions), "--json"))
    openai_server.set_mode("rerank", malformed=True)
    env.update(
        PEITU_RERANK__ENABLED="true",
        PEITU_RERANK__BASE_URL=openai_server.base_url,
        PEITU_RERANK__MODEL="fake-chat",
    )
    result = _json(peitu(env, "recommend", "小狗在草地上奔跑", "--json"))
    assert result["reranked"] is False
    assert isinstance(result["message"], str) and "按匹配度" in result["message"]
    assert result["results"] and openai_server.calls["rerank"] >= 1
    rerank = result["rerank"]
    assert rerank["state"] == "failed" and "no JSON object" in rerank["reason"]
    failed = [note for note in result["notes"] if note["kind"] == "rerank_failed"]
    assert len(failed) == 1 and failed[0]["text"].startswith("智能排序暂不可用")
    assert result["message"] == "；".join(note["text"] for note in result["notes"])


def test_recommend_batch_prints_one_object_per_text_and_no_rerank_skips_the_llm(
    tmp_path: Path, m3e_path: Path, small_library: SmallLibrary, openai_server: FakeOpenAIServer
) -> None:
    env = _env(tmp_path, m3e_path, PEITU_LIBRARY=str(small_library.root))
    _json(peitu(env, "index", "--descriptions", str(small_library.descriptions), "--json"))
    env.update(
        PEITU_RERANK__ENABLED="true",
        PEITU_RERANK__BASE_URL=openai_server.base_url,
        PEITU_RERANK__MODEL="fake-chat",
        PEITU_SIMILARITY_THRESHOLD="0",
    )
    wanted = [small_library.photos[n] for n in (2, 7, 11)]
    batch = tmp_path / "texts.txt"
    batch.write_text("\n".join([wanted[0].captions[4], "", *(w.captions[4] for w in wanted[1:])]))

    for flags, rerank_calls in (((), 3), (("--no-rerank",), 0)):
        before = openai_server.calls["rerank"]
        proc = peitu(env, "recommend", "--batch", str(batch), "--top-k", "5", *flags)
        assert proc.returncode == 0, proc.stderr
        lines = [json.loads(line) for line in proc.stdout.splitlines()]
        assert [line["query"] for line in lines] == [w.captions[4] for w in wanted]  # blank skipped
        assert all(line["reranked"] is (rerank_calls > 0) for line in lines)
        assert openai_server.calls["rerank"] - before == rerank_calls
        found = sum(
            w.rel_path in [r["path"] for r in line["results"]]
            for w, line in zip(wanted, lines, strict=True)
        )
        assert found >= 2  # another caption of the photo finds it in the top 5


def test_recommend_batch_with_a_missing_file_is_a_clear_error(
    tmp_path: Path, m3e_path: Path
) -> None:
    proc = peitu(_env(tmp_path, m3e_path), "recommend", "--batch", str(tmp_path / "none.txt"))
    assert proc.returncode == 1
    assert "找不到文字文件" in proc.stderr


def test_bad_setting_stops_with_one_clear_line(tmp_path: Path, m3e_path: Path) -> None:
    proc = peitu(_env(tmp_path, m3e_path, PEITU_TOP_K_INITIAL="many"), "recommend", "海边")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "PEITU_TOP_K_INITIAL" in proc.stderr


def test_empty_text_and_missing_library_are_clear_errors(tmp_path: Path, m3e_path: Path) -> None:
    env = _env(tmp_path, m3e_path, PEITU_LIBRARY=str(tmp_path / "missing"))
    empty = peitu(env, "recommend", "  ")
    assert (
        empty.returncode == 1
        and "请给出要配图的文字" in empty.stderr
        and "Traceback" not in empty.stderr
    )
    missing = peitu(env, "index")
    assert (
        missing.returncode == 1
        and "missing" in missing.stderr
        and "Traceback" not in missing.stderr
    )


def test_config_file_is_read(tmp_path: Path, m3e_path: Path) -> None:
    config = tmp_path / "peitu.toml"
    config.write_text("top_k_initial = 3\ntop_k_final = 4\n", encoding="utf-8")
    proc = peitu(_env(tmp_path, m3e_path), "--config", str(config), "status")
    assert proc.returncode == 2 and "top_k_final (4) cannot exceed top_k_initial (3)" in proc.stderr


@pytest.mark.parametrize("port", ["70000", "0", "http"])
def test_serve_refuses_a_port_out_of_range(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    from cli.main import main

    with pytest.raises(SystemExit) as exited:
        main(["serve", "--port", port])
    assert exited.value.code == 2
    assert f"{port!r} 不是端口号（1 到 65535）" in capsys.readouterr().err


def test_a_running_app_finds_what_another_process_indexed(
    tmp_path: Path,
    m3e_path: Path,
    small_library: SmallLibrary,
    make_settings: SettingsFactory,
    embedder: SentenceTransformerEmbedder,
) -> None:
    """The bot (or server) keeps its embedded index open while `peitu index` runs elsewhere."""
    settings = make_settings(library=small_library.root, data_dir=tmp_path / "data")
    running = build_app(settings, embedder=embedder)
    target = small_library.photos[5]
    assert running.recommend(target.captions[4], rerank=False).results == []
    env = _env(tmp_path, m3e_path, PEITU_LIBRARY=str(small_library.root))
    _json(peitu(env, "index", "--descriptions", str(small_library.descriptions), "--json"))
    found = running.recommend(target.captions[4], 5, rerank=False).results
    assert target.rel_path in [r.path for r in found]
    assert running.status().photos == 30
    running.close()


def test_a_reader_that_closes_the_pipe_ends_the_command_quietly(
    tmp_path: Path, m3e_path: Path
) -> None:
    """`peitu status | head -0`: the reader is gone before the first line is written."""
    reader, writer = os.pipe()
    os.close(reader)  # nobody will read: every write fails with EPIPE
    try:
        done = subprocess.run(
            [sys.executable, "-m", "cli.main", "status"],
            env=_env(tmp_path, m3e_path),
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        os.close(writer)
    assert done.returncode == 141, done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
