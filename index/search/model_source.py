"""Where the embedding model comes from, and a quick answer when it cannot come at all.

sentence-transformers downloads a hub model on first use; with no network it retries for
~20 s and fails with a long English traceback. `ensure_model_obtainable` answers first, in
at most `PROBE_TIMEOUT_S`, with one Chinese line naming the four ways to get the model:
Hugging Face, an `HF_ENDPOINT` mirror, a ModelScope download, a local folder.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from index.errors import ModelUnavailable

PROBE_TIMEOUT_S = 3.0
DEFAULT_ENDPOINT = "https://huggingface.co"
MIRROR_HINT = "https://hf-mirror.com"
# Download sizes of the m3e models (the weights file; the rest is under 1 MB).
KNOWN_SIZES_MB = {"moka-ai/m3e-small": 92, "moka-ai/m3e-base": 410, "moka-ai/m3e-large": 1300}

Where = Literal["folder", "cache", "download", "missing"]


@dataclass(frozen=True)
class ModelSource:
    """Where the model is (or would come from), for `peitu doctor` and the first load."""

    where: Where
    name: str
    endpoint: str  # the hub it downloads from ("" for a local folder)
    size_mb: int | None
    problem: str | None = None  # one Chinese line with the fix, when it cannot be had


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


# Copies of the hub models on ModelScope (mainland China), for the hint.
MODELSCOPE_COPIES = {"moka-ai/m3e-base": "xrunda/m3e-base"}


def how_to_get(name: str) -> str:
    """The fix, in one Chinese line: the four ways to get the model."""
    copy = MODELSCOPE_COPIES.get(name)
    modelscope = (
        f"modelscope download --model {copy} --local_dir 文件夹"
        if copy
        else f"在 ModelScope 找 {name.split('/')[-1]} 下载到本地文件夹"
    )
    return (
        f"可以：① 设 HF_ENDPOINT={MIRROR_HINT} 用国内镜像下载；"
        f"② 用 ModelScope：{modelscope}；"
        "③ 把已下载的模型文件夹设为 PEITU_EMBEDDING__MODEL（并设 HF_HUB_OFFLINE=1）；"
        "④ 用自带的离线小模型 PEITU_EMBEDDING__MODEL=models/m3e-small。"
    )


def locate_model(name_or_path: str, *, probe: bool = True) -> ModelSource:
    """Find the model: a local folder, the hub cache, or a hub that answers (when `probe`)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return ModelSource("folder", str(path), "", _folder_mb(path))
    size = KNOWN_SIZES_MB.get(name_or_path)
    if _looks_like_path(name_or_path):
        problem = f"找不到向量模型文件夹 {name_or_path}：请检查 PEITU_EMBEDDING__MODEL。"
        return ModelSource("missing", name_or_path, "", None, problem)
    if _in_hub_cache(name_or_path):
        return ModelSource("cache", name_or_path, hub_endpoint(), size)
    endpoint = hub_endpoint()
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
        problem = f"离线模式（HF_HUB_OFFLINE=1）下本机没有向量模型 {name_or_path}。" + how_to_get(
            name_or_path
        )
        return ModelSource("missing", name_or_path, endpoint, size, problem)
    if probe and not reachable(endpoint):
        problem = (
            f"连不上 {endpoint}，下载不了向量模型 {name_or_path}"
            f"（约 {size or '几百'} MB）。" + how_to_get(name_or_path)
        )
        return ModelSource("missing", name_or_path, endpoint, size, problem)
    return ModelSource("download", name_or_path, endpoint, size)


def ensure_model_obtainable(name_or_path: str) -> None:
    """Raise `ModelUnavailable` (one Chinese line) at once when the model cannot be loaded."""
    source = locate_model(name_or_path)
    if source.problem is not None:
        raise ModelUnavailable(source.problem)


def reachable(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """A TCP connection to the URL's host opens within the timeout (DNS included)."""
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    answer: list[bool] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                answer.append(True)
        except OSError:
            answer.append(False)

    # getaddrinfo has no timeout of its own: a broken resolver could hang; the thread bounds it.
    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout_s + 0.5)
    return bool(answer and answer[0])


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except ValueError:  # not a valid repo id
        return False
    return isinstance(found, str)


def _folder_mb(path: Path) -> int:
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return round(total / (1024 * 1024))
