"""A describer that asks a vision model (Qwen-VL, LLaVA on Ollama, ...) to describe each photo.

The photo is downscaled to a JPEG no larger than `max_side` on its long side before it is sent:
vision models see about 1024 px anyway, and a 24-megapixel original would cost seconds of upload.
The answer is asked for as labelled lines (`主体：...`, `场景：...`) so that later work can split it
into facets.
"""

from __future__ import annotations

import base64
import io
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam
from PIL import Image

from config.settings import VisionSettings
from index.errors import DescribeFailed, DescriberResting, ModelCoolingDown, ModelUnavailable
from index.library.imaging import (
    QUERY_BUDGET,
    DecodeBudget,
    decode_image,
    flat_rgb,
    open_query_image,
)
from index.llm import CallGate, ProviderHealth, Sleep, chat, make_client
from index.models import PhotoFile

logger = logging.getLogger(__name__)

PROMPT_VERSION = "v1"
JPEG_QUALITY = 85
FACET_LABELS = ("主体", "场景", "人物动作", "氛围", "文字", "适合主题")

SYSTEM_PROMPT = (
    "你是一位细心的摄影编辑，为个人相册里的照片写简洁、准确的中文描述，"
    "这些描述之后会用来按文字检索照片、为朋友圈和社交媒体帖子配图。"
    "只写画面中真实可见的内容，不猜测，不编造。"
)
USER_PROMPT = (
    "请描述这张照片。按下面的格式逐行回答，每行以标签开头，内容用简短的中文：\n"
    "主体：照片的主体内容\n"
    "场景：拍摄地点与环境（室内或室外、城市或自然、季节、天气、时间）\n"
    "人物动作：人物的数量、特征与动作；没有人物就写“无”\n"
    "氛围：画面的情绪与氛围\n"
    "文字：画面中可见的文字，照原样写出；没有就写“无”\n"
    "适合主题：适合用这张照片配图的朋友圈或社交帖子主题，写二到四个\n"
    "只输出这六行纯文本，不要使用 Markdown，不要有其他说明。"
)

MAX_DESCRIPTION_CHARS = 4000  # six labelled lines are a few hundred; more is a runaway answer
_UPLOAD_CALLS = 2
_BYTES_LABEL = "<image bytes>"
_MARKUP = re.compile(r"^\s*(?:[-*•]\s+|\d+[.、)]\s*)?|\*\*")
_LABEL_COLON = re.compile(r"^(" + "|".join(FACET_LABELS) + r")\s*[:：]\s*")


@dataclass(frozen=True)
class _Limits:
    max_pixels: int
    max_bytes: int | None


class VisionDescriber:
    """Describes photos through an OpenAI-compatible vision chat endpoint."""

    def __init__(
        self,
        settings: VisionSettings,
        *,
        max_pixels: int,
        max_bytes: int | None = None,
        client: OpenAI | None = None,
        sleep: Sleep = time.sleep,
    ) -> None:
        """`max_pixels` and `max_bytes` are the scan's limits (`PEITU_INDEXING__*`): an upload
        or a chat image is refused by them before it is decoded, as a library file is."""
        self._settings = settings
        self._limits = _Limits(max_pixels, max_bytes)
        self._client = client if client is not None else make_client(settings)
        self._sleep = sleep
        # the indexer's workers plus a few uploads (`/api/search/similar`, `/相似`)
        self._gate = CallGate(settings.concurrency + _UPLOAD_CALLS)
        self._health = ProviderHealth()  # a job stops calling an endpoint that keeps failing

    @property
    def key(self) -> str:
        """Identity of (model, prompt version): descriptions are cached under it."""
        return f"{self._settings.model}@{PROMPT_VERSION}"

    def describe(self, photo: PhotoFile, data: bytes | None = None) -> str:
        """Describe the photo (its `data` when given). Raises `DescribeFailed` or
        `PhotoUnreadable`."""
        return self._describe_jpeg(
            self._encode(photo.path if data is None else data), str(photo.path)
        )

    def describe_bytes(self, data: bytes) -> str:
        """Describe an image given as bytes (an upload, a chat image): a query, decoded within
        `QUERY_BUDGET`. Same errors as `describe`."""
        return self._describe_jpeg(self._encode(data, QUERY_BUDGET), _BYTES_LABEL)

    def _encode(self, source: Path | bytes, budget: DecodeBudget | None = None) -> bytes:
        max_side, limits = self._settings.max_side, self._limits
        return encode_for_vision(
            source,
            max_side,
            max_pixels=limits.max_pixels,
            max_bytes=limits.max_bytes,
            budget=budget,
        )

    def _describe_jpeg(self, jpeg: bytes, label: str) -> str:
        try:
            answer = chat(
                self._client,
                self._settings.model,
                vision_messages(jpeg),
                max_retries=self._settings.max_retries,
                timeout_s=self._settings.timeout_s,
                sleep=self._sleep,
                gate=self._gate,
                health=self._health,
            )
        except ModelCoolingDown as error:
            raise DescriberResting(f"cannot describe {label} now: {error}") from error
        except ModelUnavailable as error:
            raise DescribeFailed(f"cannot describe {label}: {error}") from error
        description = clean_description(answer)[:MAX_DESCRIPTION_CHARS]
        if not any(char.isalnum() for char in description):  # empty, or only "{{{{" or "…"
            model = self._settings.model
            raise DescribeFailed(f"cannot describe {label}: model {model} answered nothing usable")
        logger.debug("described %s in %d chars", label, len(description))
        return description


def vision_messages(jpeg: bytes) -> list[ChatCompletionMessageParam]:
    """The system and user messages that ask for a labelled description of one JPEG."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": jpeg_data_url(jpeg)}},
                {"type": "text", "text": USER_PROMPT},
            ],
        },
    ]


def jpeg_data_url(jpeg: bytes) -> str:
    """A `data:image/jpeg;base64,...` URL, the form OpenAI-compatible servers accept inline."""
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def clean_description(answer: str) -> str:
    """Strip Markdown bullets and bold, normalise `标签:` to `标签：`, drop blank lines."""
    lines = (_MARKUP.sub("", line).strip() for line in answer.splitlines())
    return "\n".join(_LABEL_COLON.sub(r"\1：", line) for line in lines if line)


def encode_for_vision(
    source: Path | bytes,
    max_side: int,
    *,
    max_pixels: int,
    max_bytes: int | None = None,
    budget: DecodeBudget | None = None,
) -> bytes:
    """Decode an image (JPEG, PNG, HEIC, ...) through `index.library.imaging.decode_image`, upright
    it, and re-encode it as an RGB JPEG.

    The long side is at most `max_side`; smaller images keep their size. Raises
    `PhotoUnreadable` with the scan's reasons: a format outside the allow-list is "corrupt", a
    header over `max_pixels` is "too_many_pixels" before any pixel is decoded. With a `budget`
    (a query image), so is one whose decode would cost more, and the image is reduced as soon
    as it is decoded (`open_query_image`).
    """
    box = (max_side, max_side)  # JPEG: decode at 1/2, 1/4 or 1/8 scale
    if budget is None:
        image = decode_image(
            source, max_pixels=max_pixels, max_bytes=max_bytes, draft_box=box
        ).image
    else:
        image = open_query_image(
            source, max_side, max_pixels=max_pixels, max_bytes=max_bytes, budget=budget
        )
    upright = flat_rgb(image)  # a transparent PNG would otherwise turn black
    upright.thumbnail(box, Image.Resampling.LANCZOS)
    return _jpeg(upright)


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return buffer.getvalue()
