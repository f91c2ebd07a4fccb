"""A thin, retrying wrapper around the `openai` client for any OpenAI-compatible chat endpoint.

DashScope, Ollama and vLLM all speak the same `/v1/chat/completions`; the vision describer and
the reranker are two configurations of this one client. The `openai` client's own retries are
switched off (`max_retries=0`) because `chat` retries itself: with jitter, with `Retry-After`
honoured, and with a `ModelUnavailable` that names the model and the endpoint at the end.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import openai
from openai import OpenAI, omit
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam

from config.settings import ModelEndpoint
from index.errors import ModelUnavailable

logger = logging.getLogger(__name__)

Sleep = Callable[[float], None]

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 8.0
_NO_KEY = "EMPTY"  # Ollama and vLLM accept any key; the client refuses none at all


class ModelRequestRejected(ModelUnavailable):
    """The endpoint refused the request itself (a 4xx other than 429); retrying will not help."""

    def __init__(self, message: str, status_code: int) -> None:
        self.status_code = status_code
        super().__init__(message)


@dataclass(frozen=True)
class _Attempt:
    """What one failed try tells the retry loop."""

    what: str  # for the final error message, e.g. "HTTP 503" or "timed out after 2.0 s"
    retryable: bool
    retry_after_s: float | None = None
    status_code: int | None = None


def make_client(endpoint: ModelEndpoint) -> OpenAI:
    """Build an `OpenAI` client for the endpoint, with the client's own retries switched off."""
    api_key = endpoint.api_key.get_secret_value() if endpoint.api_key is not None else _NO_KEY
    return OpenAI(
        api_key=api_key,
        base_url=endpoint.base_url,
        timeout=endpoint.timeout_s,
        max_retries=0,
    )


def chat(
    client: OpenAI,
    model: str,
    messages: Sequence[ChatCompletionMessageParam],
    *,
    max_retries: int,
    timeout_s: float,
    temperature: float = 0.0,
    json_mode: bool = False,
    sleep: Sleep = time.sleep,
) -> str:
    """Send one chat completion and return the assistant's text, stripped.

    Retries up to `max_retries` times on 429, 5xx, timeouts and connection errors, sleeping with
    exponential backoff and jitter (or the server's `Retry-After`, capped). Raises
    `ModelRequestRejected` at once on any other 4xx, and `ModelUnavailable` when the tries run
    out or the answer has no text.
    """
    for attempt in range(max_retries + 1):
        try:
            completion = _create(client, model, messages, timeout_s, temperature, json_mode)
        except openai.APIError as error:
            failure = _classify(error, timeout_s)
            if not failure.retryable or attempt == max_retries:
                raise _give_up(client, model, failure, attempt + 1) from error
            delay = backoff_delay(attempt, failure.retry_after_s)
            _log_retry(client, model, failure, attempt, max_retries, delay)
            sleep(delay)
            continue
        return _answer_text(completion, client, model)
    raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover


def _log_retry(
    client: OpenAI, model: str, failure: _Attempt, attempt: int, max_retries: int, delay: float
) -> None:
    logger.warning(
        "%s at %s: %s; retry %d/%d in %.2f s",
        model,
        client.base_url,
        failure.what,
        attempt + 1,
        max_retries,
        delay,
    )


def backoff_delay(attempt: int, retry_after_s: float | None = None) -> float:
    """Seconds to wait before retry number `attempt + 1` (attempt counts from 0).

    A server's `Retry-After` wins when given; either way the wait never exceeds `BACKOFF_CAP_S`.
    """
    if retry_after_s is not None:
        return min(BACKOFF_CAP_S, max(0.0, retry_after_s))
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0**attempt)
    # Jitter in the upper half keeps the backoff growing while de-synchronising parallel callers.
    return ceiling * random.uniform(0.5, 1.0)


def _create(
    client: OpenAI,
    model: str,
    messages: Sequence[ChatCompletionMessageParam],
    timeout_s: float,
    temperature: float,
    json_mode: bool,
) -> ChatCompletion:
    return client.chat.completions.create(
        model=model,
        messages=list(messages),
        temperature=temperature,
        timeout=timeout_s,
        response_format={"type": "json_object"} if json_mode else omit,
    )


def _classify(error: openai.APIError, timeout_s: float) -> _Attempt:
    if isinstance(error, openai.APITimeoutError):
        return _Attempt(f"timed out after {timeout_s:g} s", retryable=True)
    if isinstance(error, openai.APIConnectionError):
        return _Attempt(f"connection failed ({error.message})", retryable=True)
    if isinstance(error, openai.APIStatusError):
        status = error.status_code
        retryable = status == 429 or status >= 500
        retry_after = _retry_after_s(error.response.headers) if retryable else None
        what = f"HTTP {status} ({_short(error.message)})"
        return _Attempt(what, retryable, retry_after, status)
    return _Attempt(f"unusable response ({_short(error.message)})", retryable=False)


def _retry_after_s(headers: Any) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds or an HTTP date); None if absent."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        seconds = _as_float(millis)
        return seconds / 1000.0 if seconds is not None else None
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _as_float(value)
    if seconds is not None:
        return seconds
    try:
        return parsedate_to_datetime(value).timestamp() - time.time()
    except (TypeError, ValueError):
        return None


def _as_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _answer_text(completion: ChatCompletion, client: OpenAI, model: str) -> str:
    content = completion.choices[0].message.content if completion.choices else None
    text = (content or "").strip()
    if not text:
        raise ModelUnavailable(f"model {model} at {client.base_url} answered with empty content")
    return text


def _give_up(client: OpenAI, model: str, failure: _Attempt, tries: int) -> ModelUnavailable:
    plural = "try" if tries == 1 else "tries"
    message = f"model {model} at {client.base_url}: {failure.what} after {tries} {plural}"
    if failure.retryable or failure.status_code is None:
        return ModelUnavailable(message)
    return ModelRequestRejected(message, failure.status_code)


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
