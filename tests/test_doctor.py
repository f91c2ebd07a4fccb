"""`peitu doctor` and the first run: each failing check says what is wrong and what to do.

Real folders, a real local HTTP server for the endpoints, real closed ports for "no network",
and the real CLI in a subprocess with a fresh, empty model cache.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from config import load_settings
from index.doctor import (
    check_bot,
    check_data_dir,
    check_embedding,
    check_endpoint,
    check_library,
    check_offline,
    check_rerank,
    check_token,
    run_checks,
)
from index.errors import ModelUnavailable
from index.library.pairing import BotAccess
from index.search.embed import SentenceTransformerEmbedder
from tests.support.core_fixtures import SmallLibrary
from tests.support.openai_server import FakeOpenAIServer

CJK = "\u4e00"


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there once the socket is closed


class _RefusesKeys(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error": {"message": "Incorrect API key provided"}}')

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def refusing_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RefusesKeys)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_library_not_set_missing_or_a_file(tmp_path: Path) -> None:
    unset = check_library(None)
    assert (unset.level, unset.message) == ("fail", "没有设置图库：请设 PEITU_LIBRARY=照片文件夹。")
    missing = check_library(tmp_path / "nowhere")
    assert missing.level == "fail" and "找不到" in missing.message
    assert "PEITU_LIBRARY" in missing.message
    a_file = tmp_path / "photo.jpg"
    a_file.write_bytes(b"x")
    not_folder = check_library(a_file)
    assert not_folder.level == "fail" and "不是文件夹" in not_folder.message
    assert check_library(tmp_path).level == "ok"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder")
def test_an_unreadable_library_names_the_permission(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        check = check_library(locked)
    finally:
        locked.chmod(0o755)
    assert check.level == "fail" and "没有权限读取" in check.message and "uid 1000" in check.message


def test_a_data_folder_that_cannot_be_written(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    check = check_data_dir(blocker / "data")
    assert check.level == "fail" and "不能写入" in check.message
    assert "PEITU_DATA_DIR" in check.message
    ok = check_data_dir(tmp_path / "data")
    assert ok.level == "ok" and list((tmp_path / "data").iterdir()) == []  # probe removed


def test_embedding_model_from_a_folder_a_missing_folder_and_no_network(
    m3e_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = check_embedding(str(m3e_path))
    assert folder.level == "ok" and "本地文件夹" in folder.message and "MB" in folder.message
    missing = check_embedding(str(tmp_path / "m3e-base"))
    assert missing.level == "fail" and "找不到向量模型文件夹" in missing.message

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", _closed_port_url())
    unreachable = check_embedding("nobody/not-cached-model")
    assert unreachable.level == "fail" and "连不上" in unreachable.message
    for way in ("HF_ENDPOINT=https://hf-mirror.com", "ModelScope", "PEITU_EMBEDDING__MODEL"):
        assert way in unreachable.message

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = check_embedding("nobody/not-cached-model")
    assert offline.level == "fail" and "离线模式" in offline.message


def test_embedding_model_that_would_be_downloaded(
    openai_server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", openai_server.base_url.removesuffix("/v1"))
    check = check_embedding("moka-ai/m3e-base-not-cached")
    assert check.level == "warn" and "还没下载" in check.message


def test_the_first_load_without_network_fails_at_once_with_one_chinese_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", _closed_port_url())
    with pytest.raises(ModelUnavailable) as raised:
        SentenceTransformerEmbedder("nobody/not-cached-model").load()
    message = str(raised.value)
    assert "\n" not in message and max(message) >= CJK and "HF_ENDPOINT" in message


def test_dashscope_without_a_key_or_with_the_example_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("DASHSCOPE_API_KEY", raising=False)
    settings = load_settings(data_dir=tmp_path)
    no_key = check_endpoint("vision", "识图模型", settings.vision)
    assert no_key.level == "fail" and "DASHSCOPE_API_KEY" in no_key.message
    assert "--describer offline" in no_key.message

    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-your-dashscope-key")  # from .env.example
    example = load_settings(data_dir=tmp_path)
    assert example.vision.api_key is None and example.rerank.api_key is None
    assert check_endpoint("rerank", "排序模型", example.rerank).level == "fail"
    for fake in ("sk-xxx", "sk-...", "<your key>", "sk-xxxxxxxxxxxxxxxx"):
        monkeypatch.setenv("DASHSCOPE_API_KEY", fake)
        assert load_settings(data_dir=tmp_path).vision.api_key is None, fake
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-0123456789abcdef0123456789abcdef")
    assert load_settings(data_dir=tmp_path).vision.api_key is not None


def test_an_endpoint_that_is_down_refuses_the_key_or_answers(
    refusing_server: str, openai_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    def vision_at(url: str) -> object:
        settings = load_settings(data_dir=tmp_path, vision={"base_url": url, "api_key": "k-1"})
        return settings.vision

    down = check_endpoint("vision", "识图模型", vision_at(_closed_port_url() + "/v1"))  # type: ignore[arg-type]
    assert down.level == "fail" and "连不上" in down.message
    assert "PEITU_VISION__BASE_URL" in down.message
    refused = check_endpoint("vision", "识图模型", vision_at(refusing_server))  # type: ignore[arg-type]
    assert refused.level == "fail" and "拒绝了 API key" in refused.message
    assert "PEITU_VISION__API_KEY" in refused.message
    answers = check_endpoint("vision", "识图模型", vision_at(openai_server.base_url))  # type: ignore[arg-type]
    assert answers.level == "ok" and "有回应" in answers.message


def test_rerank_switched_off_and_the_admin_token(tmp_path: Path) -> None:
    off = check_rerank(load_settings(data_dir=tmp_path, rerank={"enabled": False}))
    assert off.level == "ok" and "已关闭" in off.message
    missing = check_token(load_settings(data_dir=tmp_path))
    assert missing.level == "warn" and "PEITU_ADMIN_TOKEN" in missing.message
    short = check_token(load_settings(data_dir=tmp_path, admin_token="abc"))
    assert short.level == "warn" and "太短" in short.message
    assert check_token(load_settings(data_dir=tmp_path, admin_token="x" * 24)).level == "ok"


def test_the_offline_models_check_names_what_is_missing(tmp_path: Path) -> None:
    models = {name: tmp_path / f"{name}.onnx" for name in ("detector", "face", "attributes")}
    for path in models.values():
        path.write_bytes(b"x" * 2048)
    offline = {
        "detector_model": str(models["detector"]),
        "face_model": str(models["face"]),
        "face_attributes_model": str(models["attributes"]),
    }
    ready = check_offline(load_settings(data_dir=tmp_path, offline=offline).offline)
    assert ready.level == "ok" and "face.onnx、attributes.onnx 已就绪" in ready.message
    models["attributes"].unlink()
    no_faces = check_offline(load_settings(data_dir=tmp_path, offline=offline).offline)
    assert no_faces.level == "warn" and str(models["attributes"]) in no_faces.message
    assert "每个人都只写“人”" in no_faces.message and "fetch_detector.sh" in no_faces.message
    models["detector"].unlink()
    no_detector = check_offline(load_settings(data_dir=tmp_path, offline=offline).offline)
    assert no_detector.level == "warn" and str(models["detector"]) in no_detector.message
    off = check_offline(load_settings(data_dir=tmp_path, offline={"detector_model": ""}).offline)
    assert off.level == "ok" and "已关闭" in off.message
    faces_off = {**offline, "face_model": ""}
    models["detector"].write_bytes(b"x")
    no_face_step = check_offline(load_settings(data_dir=tmp_path, offline=faces_off).offline)
    assert no_face_step.level == "ok" and "人脸识别已关闭" in no_face_step.message


def test_every_check_is_one_chinese_line(tmp_path: Path, small_library: SmallLibrary) -> None:
    settings = load_settings(library=small_library.root, data_dir=tmp_path / "data")
    checks = run_checks(settings, probe=False)
    assert [c.name for c in checks] == [
        "library",
        "data_dir",
        "embedding",
        "vision",
        "offline",
        "rerank",
        "token",
        "bot",
    ]
    for check in checks:
        assert "\n" not in check.message and any("\u4e00" <= ch <= "\u9fff" for ch in check.message)


def _cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PEITU_", "DASHSCOPE_", "HF_")) and k != "TRANSFORMERS_CACHE"
    }
    env.update(
        HF_HOME=str(tmp_path / "empty-hf-home"),  # a first run: nothing downloaded yet
        HF_ENDPOINT=_closed_port_url(),  # and no network
        PEITU_DATA_DIR=str(tmp_path / "data"),
        PEITU_EMBEDDING__MODEL="moka-ai/m3e-base",
    )
    env.update(extra)
    return env


def _peitu(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "cli.main", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def test_peitu_doctor_on_a_first_run_without_network(tmp_path: Path) -> None:
    env = _cli_env(tmp_path, DASHSCOPE_API_KEY="sk-your-dashscope-key")
    done = _peitu("doctor", env=env)
    lines = done.stdout.splitlines()
    assert done.returncode == 1, done.stderr
    assert len(lines) == 9  # eight checks and the summary
    assert lines[0].startswith("✗ 照片图库：没有设置图库")
    assert lines[1].startswith("✓ 数据目录")
    assert lines[2].startswith("✗ 向量模型：连不上") and "hf-mirror.com" in lines[2]
    assert lines[3].startswith("✗ 识图模型：DashScope 需要 API key")
    assert lines[4].startswith(("✓ 离线描述模型", "! 离线描述模型"))  # with or without setup.sh
    assert (
        lines[5].startswith("✓ 排序模型：未配置（按匹配度排序）")
        and "DASHSCOPE_API_KEY" in lines[5]
    )
    assert lines[6].startswith("! 管理令牌：没有设置 PEITU_ADMIN_TOKEN")
    assert lines[7] == "✓ 微信机器人：没有配置（PEITU_WECHAT__ENDPOINT 为空）。"
    assert lines[8] == "有 3 项需要处理，见上面 ✗ 的行。"
    assert done.stderr == ""


def test_a_first_index_run_without_network_fails_with_one_chinese_line(
    tmp_path: Path, small_library: SmallLibrary
) -> None:
    env = _cli_env(tmp_path, PEITU_LIBRARY=str(small_library.root))
    done = _peitu("index", "--descriptions", str(small_library.descriptions), env=env)
    errors = [line for line in done.stderr.splitlines() if line.startswith("peitu:")]
    assert done.returncode == 1, done.stderr
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("peitu: 连不上 http://127.0.0.1:")
    assert "下载不了向量模型 moka-ai/m3e-base（约 410 MB）" in errors[0]
    assert "Traceback" not in done.stderr


def test_serve_help_shows_the_real_defaults_and_commands_have_descriptions(
    tmp_path: Path,
) -> None:
    env = _cli_env(tmp_path)
    serve = _peitu("serve", "--help", env=env).stdout
    assert "默认 127.0.0.1" in serve and "默认 8000" in serve  # the CLI speaks Chinese
    for command in ("bot", "status", "doctor"):
        text = _peitu(command, "--help", env=env).stdout
        description = text.split("\n\n")[1].strip()
        assert len(description) > 25 and description.endswith("。"), text  # a sentence or two
    english = _peitu("serve", "--help", env={**env, "PEITU_LANG": "en"}).stdout
    assert "default: 127.0.0.1" in english and "default: 8000" in english


def test_the_bot_check_shows_the_pairing_code_and_who_is_served(tmp_path: Path) -> None:
    """What the owner needs to use a private bot: the code to send, and how many are in."""
    settings = load_settings(data_dir=tmp_path, wechat={"endpoint": "127.0.0.1:8788"})
    first = check_bot(settings)
    code = BotAccess(tmp_path).code()
    assert (
        first.level == "ok"
        and f"/绑定 {code}" in first.message
        and "已绑定的 0 人" in first.message
    )
    BotAccess(tmp_path).pair(code, "wxid_owner", "我")
    again = check_bot(settings)
    assert "已绑定的 1 人" in again.message and f"/绑定 {code}" not in again.message  # a new one
    everyone = load_settings(
        data_dir=tmp_path, wechat={"endpoint": "x:1"}, chat={"allow_everyone": True}
    )
    assert check_bot(everyone).level == "warn" and "谁都能用" in check_bot(everyone).message
