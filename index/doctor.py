"""`peitu doctor`: is everything a first run needs in place? One line per check, with the fix.

The same checks back the web page's 运行检查 (GET /api/doctor). Each check is quick (network
probes wait at most a few seconds) and changes nothing but a probe file it removes (and the
WeChat bot's pairing code, made when there is none yet, to be shown).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
from openai.types.chat import ChatCompletionMessageParam

from config import ModelEndpoint, Settings
from config.settings import OfflineSettings
from index.errors import ModelUnavailable
from index.library.pairing import BotAccess
from index.llm import ModelRequestRejected, chat, make_client
from index.search.model_source import PROBE_TIMEOUT_S, how_to_get, locate_model

Level = Literal["ok", "warn", "fail"]
CHAT_PROBE_TIMEOUT_S = 10.0  # one short answer; a hung model is told apart from a slow one
CHAT_PROBE: list[ChatCompletionMessageParam] = [{"role": "user", "content": "请只回答一个字：好"}]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    name: str  # a stable key: library, data_dir, embedding, vision, offline, rerank, token, bot
    level: Level
    title: str  # what was checked, in Chinese
    message: str  # what was found, and the fix when it is not ok (Chinese, one line)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_checks(settings: Settings, *, probe: bool = True) -> list[Check]:
    """Every check, in the order a first run needs them."""
    checks: list[Callable[[], Check]] = [
        lambda: check_library(settings.library),
        lambda: check_data_dir(settings.data_dir),
        lambda: check_embedding(settings.embedding.model, probe=probe),
        lambda: check_endpoint("vision", "识图模型", settings.vision, probe=probe),
        lambda: check_offline(settings.offline),
        lambda: check_rerank(settings, probe=probe),
        lambda: check_token(settings),
        lambda: check_bot(settings),
    ]
    return [check() for check in checks]


def check_library(library: Path | None) -> Check:
    title = "照片图库"
    if library is None:
        return Check("library", "fail", title, "没有设置图库：请设 PEITU_LIBRARY=照片文件夹。")
    root = library.expanduser()
    if not root.exists():
        return Check("library", "fail", title, f"找不到 {root}：请检查 PEITU_LIBRARY 的路径。")
    if not root.is_dir():
        return Check(
            "library", "fail", title, f"{root} 不是文件夹：PEITU_LIBRARY 要指向照片文件夹。"
        )
    if not os.access(root, os.R_OK | os.X_OK):
        fix = "请给运行 PeiTu 的用户读取权限（Docker 里是 uid 1000）。"
        return Check("library", "fail", title, f"没有权限读取 {root}：{fix}")
    if not os.access(root, os.W_OK):
        note = "可以读取；但不能写入，网页上传照片会失败（需要写权限，才能存进 uploads 文件夹）。"
        return Check("library", "warn", title, f"{root} {note}")
    return Check("library", "ok", title, f"{root} 可以读取和上传。")


def check_data_dir(data_dir: Path) -> Check:
    title = "数据目录"
    folder = data_dir.expanduser()
    probe = folder / f".peitu-doctor-{uuid.uuid4().hex}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as error:
        why = error.strerror or type(error).__name__
        fix = "请换一个可写的文件夹（PEITU_DATA_DIR），或给运行 PeiTu 的用户写权限。"
        return Check("data_dir", "fail", title, f"{folder} 不能写入（{why}）：{fix}")
    return Check("data_dir", "ok", title, f"{folder} 可以写入。")


def check_embedding(model: str, *, probe: bool = True) -> Check:
    title = "向量模型"
    source = locate_model(model, probe=probe)
    size = f"约 {source.size_mb} MB" if source.size_mb else "大小未知"
    if source.problem is not None:
        return Check("embedding", "fail", title, source.problem)
    if source.where == "folder":
        return Check("embedding", "ok", title, f"本地文件夹 {source.name}（{size}）。")
    if source.where == "cache":
        return Check("embedding", "ok", title, f"{model} 已下载到本机缓存（{size}）。")
    message = f"{model} 还没下载：第一次使用时会从 {source.endpoint} 下载（{size}）。"
    return Check("embedding", "warn", title, message + ("" if probe else how_to_get(model)))


def check_offline(settings: OfflineSettings) -> Check:
    """Are the offline describer's models in place (the object detector and the face models)?"""
    title = "离线描述模型"
    fetch = "运行 scripts/fetch_detector.sh 放好（Docker 镜像里已经带着）。"
    if not settings.detector_model:
        return Check(
            "offline", "ok", title, "物体检测已关闭（PEITU_OFFLINE__DETECTOR_MODEL 为空）。"
        )
    detector = Path(settings.detector_model).expanduser()
    if not detector.is_file():
        lost = f"找不到物体检测模型 {detector}：没有识图模型时，离线描述说不出照片里的人和物。"
        return Check("offline", "warn", title, lost + fetch)
    face_paths = settings.face_model_paths()
    if face_paths is None:
        return Check("offline", "ok", title, f"物体检测 {detector.name} 已就绪；人脸识别已关闭。")
    missing = [str(path) for path in face_paths if not path.is_file()]
    if missing:
        lost = f"找不到人脸模型 {'、'.join(missing)}：离线描述里每个人都只写“人”。"
        return Check("offline", "warn", title, lost + fetch)
    size = sum(path.stat().st_size for path in [detector, *face_paths]) >> 20
    names = "、".join(path.name for path in face_paths)
    return Check(
        "offline", "ok", title, f"物体检测 {detector.name} 和人脸模型 {names} 已就绪（{size} MB）。"
    )


def check_rerank(settings: Settings, *, probe: bool = True) -> Check:
    title = "排序模型"
    if not settings.rerank.enabled:
        message = "已关闭（PEITU_RERANK__ENABLED=false）：结果按匹配度排序。"
        return Check("rerank", "ok", title, message)
    if settings.rerank.key_missing:  # off, like the vision side: nothing is sent to DashScope
        how = "要用大模型排序，请设 DASHSCOPE_API_KEY（或 PEITU_RERANK__API_KEY），或用本地 Ollama（PEITU_RERANK__BASE_URL）。"
        return Check("rerank", "ok", title, f"未配置（按匹配度排序）：{how}")
    return check_endpoint("rerank", title, settings.rerank, probe=probe)


def check_endpoint(name: str, title: str, endpoint: ModelEndpoint, *, probe: bool = True) -> Check:
    """Does the OpenAI-compatible endpoint answer `GET /models`, and take the key?"""
    variable = f"PEITU_{name.upper()}__API_KEY"
    key = endpoint.api_key.get_secret_value() if endpoint.api_key else ""
    where = f"{endpoint.base_url}（{endpoint.model}）"
    if endpoint.key_missing:
        offline = "；或不用识图模型：peitu index --describer offline" if name == "vision" else ""
        fix = f"请设 DASHSCOPE_API_KEY（或 {variable}），或改用本地 Ollama（PEITU_{name.upper()}__BASE_URL）{offline}。"
        return Check(
            name, "fail", title, f"DashScope 需要 API key，但没有设置（示例里的假 key 不算）：{fix}"
        )
    if not probe:
        return Check(name, "warn", title, f"{where} 未检查（跳过了网络检查）。")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.get(
            f"{endpoint.base_url}/models", headers=headers, timeout=PROBE_TIMEOUT_S
        )
    except httpx.HTTPError:
        fix = f"请检查网络和地址 PEITU_{name.upper()}__BASE_URL，本地模型服务（如 Ollama）是否已启动。"
        return Check(name, "fail", title, f"连不上 {endpoint.base_url}：{fix}")
    if response.status_code in (401, 403):
        return Check(
            name, "fail", title, f"{where} 拒绝了 API key：请检查 {variable} 或 DASHSCOPE_API_KEY。"
        )
    if response.status_code >= 500:
        return Check(
            name, "warn", title, f"{where} 出错了（HTTP {response.status_code}）：请稍后再检查。"
        )
    return _check_chat(name, title, endpoint)


def _check_chat(name: str, title: str, endpoint: ModelEndpoint) -> Check:
    """Does the model answer one short chat request in time? (`GET /models` answers even
    when every call to the model hangs or fails.)"""
    where = f"{endpoint.base_url}（{endpoint.model}）"
    try:
        chat(
            make_client(endpoint),
            endpoint.model,
            CHAT_PROBE,
            max_retries=0,
            timeout_s=min(CHAT_PROBE_TIMEOUT_S, endpoint.timeout_s),
        )
    except ModelRequestRejected as error:
        log.warning("doctor: %s refused a chat request: %s", name, error)
        fix = f"请检查模型名 PEITU_{name.upper()}__MODEL 和 API key。"
        return Check(
            name, "fail", title, f"{where} 拒绝了对话请求（HTTP {error.status_code}）：{fix}"
        )
    except ModelUnavailable as error:
        log.warning("doctor: %s did not answer a chat request: %s", name, error)
        fix = "模型可能卡住、太慢或返回了无法使用的内容：请检查模型服务，或换一个模型。"
        return Check(name, "fail", title, f"{where} 列出了模型，但没有正常回答一次对话请求：{fix}")
    return Check(name, "ok", title, f"{where} 有回应，能回答对话请求。")


def check_token(settings: Settings) -> Check:
    title = "管理令牌"
    token = settings.admin_token.get_secret_value() if settings.admin_token else ""
    if not token:
        fix = 'python3 -c "import secrets; print(secrets.token_urlsafe(24))"'
        message = f"没有设置 PEITU_ADMIN_TOKEN：网页和 API 只能在本机打开。生成一个：{fix}"
        return Check("token", "warn", title, message)
    if len(token) < 16:
        return Check("token", "warn", title, "令牌太短：请用至少 16 个随机字符。")
    return Check("token", "ok", title, "已设置。")


def check_bot(settings: Settings) -> Check:
    """Who the WeChat bot serves, and the code that lets the owner in (made when missing)."""
    title, chat = "微信机器人", settings.chat
    if not settings.wechat.endpoint:
        return Check("bot", "ok", title, "没有配置（PEITU_WECHAT__ENDPOINT 为空）。")
    if chat.allow_everyone:
        message = "谁都能用（PEITU_CHAT__ALLOW_EVERYONE=true）：加了机器人的人都能看到你的照片。"
        return Check("bot", "warn", title, message)
    access = BotAccess(settings.data_dir.expanduser())
    try:
        code, paired = access.code(), len(access.paired())
    except OSError as error:
        return Check("bot", "fail", title, f"读不了绑定记录（{error.strerror or error}）。")
    listed = "名单里的人和" if chat.allow_contacts or chat.allow_rooms else ""
    return Check(
        "bot",
        "ok",
        title,
        f"只为{listed}已绑定的 {paired} 人服务。要让自己或家人使用，请用那个微信私聊机器人发送："
        f"{chat.command_prefix}绑定 {code}（配对码用一次就换新的）。",
    )


def doctor_lines(checks: list[Check]) -> list[str]:
    """One line per check for the terminal: a mark, the title, what was found."""
    marks = {"ok": "✓", "warn": "!", "fail": "✗"}
    return [f"{marks[c.level]} {c.title}：{c.message}" for c in checks]
