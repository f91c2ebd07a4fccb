"""A real, local, deterministic OpenAI-compatible chat server for tests and benchmarks.

It serves `POST /v1/chat/completions` and `GET /v1/models` over real HTTP (FastAPI + uvicorn in
a background thread), so the code under test goes through the real `openai` client.

Answers are derived honestly from the request:

- vision (a message part of type `image_url` with a base64 data URL): the image is decoded and
  described from its mean colour, brightness, aspect and size, in labelled Chinese lines
  (`主体：...`); a mostly blue photo is 蓝天/大海, a mostly green one 草地/森林, a white one 雪.
  Set `vision_fn` to describe images your own way.
- rerank (the last user message ends with `{"text": ..., "candidates": [...]}`): each candidate
  is scored by character-bigram overlap between the text and its description. Set `rerank_fn`
  to answer with content of your own (fenced JSON, unknown ids, ...).
- anything else ("text"): `回声：<the last user text>`.

Failures are switched on at run time with `set_mode(...)`, per kind or for all kinds;
`set_mode(kind, hostile=...)` answers with one of `HOSTILE` (an HTML page with 200, truncated
JSON, JSON nested 100,000 deep, content of 200,000 `{`, a body dripped at one byte a second, an
answer that never comes).

Standalone: `python -m tests.support.openai_server --port 8099 [--delay-ms 200]`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import colorsys
import io
import itertools
import json
import logging
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from PIL import Image, ImageStat

logger = logging.getLogger(__name__)

KINDS = ("vision", "rerank", "text")
MALFORMED_CONTENT = "这不是JSON {"
WRONG_SCHEMA_CONTENT = json.dumps({"answer": "好的", "items": [1, 2, 3]}, ensure_ascii=False)
HOSTILE = ("html", "truncated", "deep", "braces", "drip", "hang")
VisionFn = Callable[[Image.Image], str]
RerankFn = Callable[[dict[str, Any]], str]  # the {"text", "candidates"} block -> answer content


@dataclass
class Mode:
    """How the server misbehaves for one kind of call. The default behaves well."""

    delay_s: float = 0.0
    fail_status: int | None = None
    fail_times: int = 0  # how many of the next calls fail with `fail_status`
    retry_after_s: float | None = None  # sent as Retry-After with `fail_status`
    malformed: bool = False
    wrong_schema: bool = False
    empty: bool = False
    reject_json_mode: bool = False  # 400 when the request asks for response_format
    hostile: str = ""  # one of HOSTILE: a broken answer instead of a completion


@dataclass
class RecordedRequest:
    """One request as the server received it."""

    kind: str
    body: dict[str, Any]
    image_sizes: list[tuple[int, int]] = field(default_factory=list)
    image_formats: list[str] = field(default_factory=list)
    status: int = 200


@dataclass(frozen=True)
class _Colour:
    name: str
    subject: str
    scene: str
    mood: str
    topics: str


_COLOURS = {
    c.name: c
    for c in (
        _Colour(
            "红", "红灯笼与节日装饰", "挂满红色装饰的节日街头", "热烈、喜庆", "春节、庆祝、团圆"
        ),
        _Colour("橙", "夕阳与晚霞", "日落时分的天边", "温暖、怀旧", "傍晚散步、日落、下班路上"),
        _Colour("黄", "阳光下的油菜花田", "洒满阳光的田野", "明快、温暖", "春天、好心情、踏青"),
        _Colour("绿", "草地与森林", "公园或森林里的绿地", "清新、生机勃勃", "周末踏青、亲近自然"),
        _Colour("青", "清澈的湖水", "湖边或泳池旁", "清凉、通透", "夏日、清凉、度假"),
        _Colour("蓝", "蓝天与大海", "晴朗的海边", "开阔、宁静", "旅行、海边度假、好天气"),
        _Colour("紫", "薰衣草花海与霓虹", "花海或夜晚的霓虹街头", "浪漫、梦幻", "约会、浪漫时刻"),
        _Colour("白", "皑皑白雪", "下雪后的雪地", "纯净、安静", "冬天、初雪、滑雪"),
        _Colour("黑", "深沉的夜色", "夜晚的室外", "神秘、安静", "深夜感悟、夜景"),
        _Colour("灰", "阴天的城市街道", "阴天的城市", "平静、略带忧郁", "城市生活、日常随拍"),
    )
}


class FakeOpenAIServer:
    """An OpenAI-compatible chat server on 127.0.0.1, in a background thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._requested_port = port
        self.port = 0
        self.calls: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()  # "rerank:status_429", "vision:malformed", ...
        self.requests: list[RecordedRequest] = []
        self.vision_fn: VisionFn | None = None
        self.rerank_fn: RerankFn | None = None
        self._modes = {kind: Mode() for kind in KINDS}
        self._lock = threading.Lock()
        self._stopping = threading.Event()  # ends hung and dripping answers
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = _build_app(self)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def __enter__(self) -> FakeOpenAIServer:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Bind, serve in a daemon thread, and return once the server accepts connections."""
        self._stopping.clear()
        sock = _bound_socket(self.host, self._requested_port)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        _wait_until(lambda: self._server is not None and self._server.started, timeout_s=10.0)

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for its thread."""
        self._stopping.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        self._server = self._thread = None

    def set_mode(self, scope: str | Iterable[str] = "all", **changes: Any) -> None:
        """Change the `Mode` fields given (e.g. `fail_status=429, fail_times=1`) for a scope.

        `scope` is "vision", "rerank", "text", "all", or several kinds.
        """
        with self._lock:
            for kind in _kinds(scope):
                for name, value in changes.items():
                    if not hasattr(self._modes[kind], name):
                        raise TypeError(f"Mode has no field {name!r}")
                    setattr(self._modes[kind], name, value)

    def mode(self, kind: str) -> Mode:
        return self._modes[kind]

    def reset(self) -> None:
        """Well-behaved again, counters and recorded requests cleared, `vision_fn` removed."""
        with self._lock:
            self._modes = {kind: Mode() for kind in KINDS}
            self.calls.clear()
            self.injected.clear()
            self.requests.clear()
            self.vision_fn = None
            self.rerank_fn = None

    def requests_of(self, kind: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.kind == kind]

    async def handle_chat(self, body: dict[str, Any]) -> Response:
        """Answer one chat completion request, misbehaving as the mode says."""
        kind = classify(body)
        record = RecordedRequest(kind=kind, body=body)
        with self._lock:
            self.calls[kind] += 1
            self.requests.append(record)
            mode = self._modes[kind]
            failure = self._take_failure(kind, mode, body)
        if mode.delay_s > 0:
            self._count(kind, "delay")
            await asyncio.sleep(mode.delay_s)
        if failure is not None:
            record.status = failure.status_code
            return failure
        if mode.hostile:
            self._count(kind, mode.hostile)
            return await self._hostile(mode.hostile, body.get("model", "fake"))
        content = self._content(kind, mode, body, record)
        return JSONResponse(completion_json(body.get("model", "fake"), content))

    def _take_failure(self, kind: str, mode: Mode, body: dict[str, Any]) -> JSONResponse | None:
        if mode.reject_json_mode and "response_format" in body:
            self.injected[f"{kind}:reject_json_mode"] += 1
            return error_response(400, "response_format is not supported by this model")
        if mode.fail_status is not None and mode.fail_times > 0:
            mode.fail_times -= 1
            self.injected[f"{kind}:status_{mode.fail_status}"] += 1
            return error_response(mode.fail_status, "injected failure", mode.retry_after_s)
        return None

    def _content(self, kind: str, mode: Mode, body: dict[str, Any], record: RecordedRequest) -> str:
        for flag, canned in (
            ("empty", ""),
            ("malformed", MALFORMED_CONTENT),
            ("wrong_schema", WRONG_SCHEMA_CONTENT),
        ):
            if getattr(mode, flag):
                self._count(kind, flag)
                return canned
        if kind == "vision":
            return self._describe_images(body, record)
        if kind == "rerank":
            return self._judge(_rerank_block(body) or {})
        return "回声：" + _last_user_text(body)

    def _describe_images(self, body: dict[str, Any], record: RecordedRequest) -> str:
        descriptions = []
        for image in decode_images(body):
            record.image_sizes.append(image.size)
            record.image_formats.append(image.format or "")
            hook = self.vision_fn
            descriptions.append(hook(image) if hook is not None else describe_image(image))
        return "\n".join(descriptions)

    def _judge(self, block: dict[str, Any]) -> str:
        hook = self.rerank_fn
        if hook is not None:
            return hook(block)
        return json.dumps(judge(block), ensure_ascii=False)

    async def _hostile(self, how: str, model: str) -> Response:
        valid = json.dumps(completion_json(model, '{"results": []}')).encode()
        if how == "html":
            return HTMLResponse("<html><body><h1>Welcome to the portal</h1></body></html>")
        if how == "truncated":
            return Response(valid[: len(valid) // 2], media_type="application/json")
        if how == "deep":
            deep = b'{"choices": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
            return Response(deep, media_type="application/json")
        if how == "braces":
            return JSONResponse(completion_json(model, "{" * 200_000))
        if how == "drip":
            return StreamingResponse(self._drip(valid), media_type="application/json")
        if how == "hang":
            while not self._stopping.is_set():
                await asyncio.sleep(0.05)
            return error_response(503, "the fake server is stopping")
        raise ValueError(f"unknown hostile answer {how!r}; use one of {HOSTILE}")

    async def _drip(self, body: bytes) -> AsyncIterator[bytes]:
        for index in range(len(body)):
            if self._stopping.is_set():
                return
            yield body[index : index + 1]
            await asyncio.sleep(1.0)

    def _count(self, kind: str, what: str) -> None:
        with self._lock:
            self.injected[f"{kind}:{what}"] += 1


# --- the HTTP app ------------------------------------------------------------------------------


def _build_app(server: FakeOpenAIServer) -> FastAPI:
    app = FastAPI(title="PeiTu fake OpenAI-compatible server")

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        ids = ("fake-vl", "fake-chat")
        data = [{"id": i, "object": "model", "created": 0, "owned_by": "peitu-tests"} for i in ids]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return error_response(400, "request body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return error_response(400, "messages must be a list")
        return await server.handle_chat(body)

    return app


def completion_json(model: str, content: str) -> dict[str, Any]:
    """A `chat.completion` object as OpenAI returns it."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 0,
            "completion_tokens": len(content),
            "total_tokens": len(content),
        },
    }


def error_response(status: int, message: str, retry_after_s: float | None = None) -> JSONResponse:
    """An OpenAI-style error body, with `Retry-After` when given."""
    headers = {"retry-after": f"{retry_after_s:g}"} if retry_after_s is not None else None
    kind = "rate_limit_error" if status == 429 else "invalid_request_error"
    if status >= 500:
        kind = "server_error"
    body = {"error": {"message": message, "type": kind, "param": None, "code": str(status)}}
    return JSONResponse(body, status_code=status, headers=headers)


# --- reading requests --------------------------------------------------------------------------


def classify(body: dict[str, Any]) -> str:
    """The kind of call: "vision", "rerank" or "text", from what the messages hold."""
    if any(part.get("type") == "image_url" for part in _content_parts(body)):
        return "vision"
    return "rerank" if _rerank_block(body) is not None else "text"


def _content_parts(body: dict[str, Any]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for message in body.get("messages", []):
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            parts.extend(p for p in content if isinstance(p, dict))
        elif isinstance(content, str):
            parts.append({"type": "text", "text": content})
    return parts


def _user_texts(body: dict[str, Any]) -> list[str]:
    texts: list[str] = []
    for message in body.get("messages", []):
        if isinstance(message, dict) and message.get("role") == "user":
            texts.extend(p.get("text", "") for p in _content_parts({"messages": [message]}))
    return texts


def _last_user_text(body: dict[str, Any]) -> str:
    texts = _user_texts(body)
    return texts[-1] if texts else ""


def _rerank_block(body: dict[str, Any]) -> dict[str, Any] | None:
    """The last JSON object with "text" and "candidates" in the user messages, if any."""
    found = None
    decoder = json.JSONDecoder()
    for text in _user_texts(body):
        for start in (i for i, ch in enumerate(text) if ch == "{"):
            try:
                value, _ = decoder.raw_decode(text, start)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict) and {"text", "candidates"} <= value.keys():
                found = value
    return found


def decode_images(body: dict[str, Any]) -> list[Image.Image]:
    """Every base64 data-URL image in the request, decoded and loaded."""
    images: list[Image.Image] = []
    for part in _content_parts(body):
        url = (
            (part.get("image_url") or {}).get("url", "") if part.get("type") == "image_url" else ""
        )
        if url.startswith("data:") and "," in url:
            try:
                image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
                image.load()
            except (binascii.Error, OSError) as error:
                logger.warning("fake server could not decode an image: %s", error)
                continue
            images.append(image)
    return images


# --- deterministic answers ---------------------------------------------------------------------


def colour_name(rgb: tuple[float, float, float]) -> str:
    """Chinese name of an RGB colour (0..255 channels), by HSV."""
    hue, sat, val = colorsys.rgb_to_hsv(*(channel / 255.0 for channel in rgb))
    if val < 0.2:
        return "黑"
    if sat < 0.18:
        return "白" if val > 0.85 else "灰"
    degrees = hue * 360.0
    bins = ((15, "红"), (45, "橙"), (70, "黄"), (160, "绿"), (195, "青"), (260, "蓝"), (330, "紫"))
    return next((name for limit, name in bins if degrees < limit), "红")


def describe_image(image: Image.Image) -> str:
    """Labelled Chinese lines describing an image from its mean colour, brightness and shape."""
    rgb = image.convert("RGB")
    mean = tuple(ImageStat.Stat(rgb).mean)
    colour = _COLOURS[colour_name((mean[0], mean[1], mean[2]))]
    luminance = 0.299 * mean[0] + 0.587 * mean[1] + 0.114 * mean[2]
    brightness = "明亮" if luminance >= 110 else "昏暗"
    width, height = image.size
    lines = (
        f"主体：一张以{colour.name}色为主的{brightness}照片，画面是{colour.subject}"
        f"（{_aspect(width, height)}，{width}×{height}）",
        f"场景：{colour.scene}",
        "人物动作：无",
        f"氛围：{colour.mood}",
        "文字：无",
        f"适合主题：{colour.topics}",
    )
    return "\n".join(lines)


def _aspect(width: int, height: int) -> str:
    if width > height * 1.1:
        return "横幅"
    return "竖幅" if height > width * 1.1 else "方形"


def bigrams(text: str) -> set[str]:
    """Character bigrams of the letters, digits and CJK characters in the text."""
    chars = [ch for ch in text if ch.isalnum()]
    return {a + b for a, b in itertools.pairwise(chars)}


def judge(block: dict[str, Any]) -> dict[str, Any]:
    """Deterministic rerank judgements for a `{"text", "candidates"}` block."""
    text = str(block.get("text", ""))
    wanted = bigrams(text)
    results = []
    for candidate in block.get("candidates", []):
        description = str(candidate.get("description", ""))
        overlap = len(wanted & bigrams(description))
        relevance = round(min(10.0, 10.0 * overlap / len(wanted)), 1) if wanted else 0.0
        results.append(
            {
                "id": candidate.get("id"),
                "relevance": relevance,
                "emotion": round(min(10.0, relevance + 1.0), 1),
                "social": round(min(10.0, 5.0 + relevance / 2.0), 1),
                "reason": f"与「{text[:10]}」相关：{description[:20]}",
            }
        )
    return {"results": results}


# --- plumbing ----------------------------------------------------------------------------------


def _kinds(scope: str | Iterable[str]) -> tuple[str, ...]:
    kinds = KINDS if scope == "all" else (scope,) if isinstance(scope, str) else tuple(scope)
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown scope {sorted(unknown)}; use one of {KINDS} or 'all'")
    return kinds


def _bound_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def _wait_until(condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError("the fake OpenAI server did not start in time")
        time.sleep(0.01)


def main(argv: list[str] | None = None) -> None:
    """Run the server in the foreground until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="delay before every answer")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    server = FakeOpenAIServer(args.host, args.port)
    server.set_mode("all", delay_s=args.delay_ms / 1000.0)
    sock = _bound_socket(args.host, args.port)
    server.port = sock.getsockname()[1]
    logger.info("fake OpenAI-compatible server at %s (Ctrl-C to stop)", server.base_url)
    uvicorn.Server(uvicorn.Config(server.app, log_level="info", lifespan="off")).run([sock])


if __name__ == "__main__":
    main()
