"""A thin, retrying wrapper around the `openai` client for any OpenAI-compatible chat endpoint.

DashScope, Ollama and vLLM all speak the same `/v1/chat/completions`; the vision describer and
the reranker are two configurations of this one client. The `openai` client's own retries are
switched off (`max_retries=0`) because `chat` retries itself: with jitter, with `Retry-After`
honoured, and with a `ModelUnavailable` that names the model and the endpoint at the end.

One rule for every answer: whatever goes wrong on the way to a usable text — the connection, an
HTTP status, a body that is HTML, not JSON, truncated, nested too deep or too large, a completion
without content — ends as `ModelUnavailable`, never as another exception. Every try has a total
deadline (connect and every read together: a server dripping one byte a second is cut off at
it), the tries and the waits between them fit in `timeout_s × (max_retries + 1)`, and a
`CallGate` bounds how many calls to one endpoint can be in flight, so a hung model holds at most
that many threads and every further call fails at once instead of queueing.

Between calls a `ProviderHealth` remembers how the endpoint has been doing: after a few failed
calls in a row, one call that timed out, or a `Retry-After` longer than a call can wait, further
calls fail at once (`ModelCoolingDown`, no request) until a cool-down has passed; then one call
tries again. A provider that is down costs one answer, not every answer.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx2 as httpx  # the transport of this `openai` release
import openai
from openai import OpenAI, omit
from openai.types.chat import ChatCompletionMessageParam

from config.settings import ModelEndpoint
from index.errors import ModelCoolingDown, ModelUnavailable

logger = logging.getLogger(__name__)

Sleep = Callable[[float], None]

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 8.0
MAX_RESPONSE_BYTES = 2 * 1024 * 1024  # a 20-candidate rerank answer is a few KB
DEFAULT_PARALLEL_CALLS = 4
FAILURES_TO_REST = 3  # failed calls in a row after which an endpoint is given a rest
REST_S = 60.0  # the first rest; it doubles each time the endpoint fails again right after
MAX_REST_S = 3600.0  # the longest rest, also for a Retry-After that asks for more
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
    timed_out: bool = False


_TIMED_OUT = _Attempt("no answer before the deadline", retryable=True, timed_out=True)


class _Failed(Exception):
    """One try failed; carries the `_Attempt` (internal to this module)."""

    def __init__(self, attempt: _Attempt) -> None:
        self.attempt = attempt
        super().__init__(attempt.what)


class CallGate:
    """At most `limit` model calls in flight; each runs in its own daemon thread.

    The caller waits for its call only until the call's deadline, so it never hangs on a model;
    a call still running then keeps its slot until it ends by itself (its reads are bounded by
    the same deadline). When every slot is taken a new call fails at once: a hung model cannot
    take more threads than `limit`, and callers fall back instead of queueing behind it.
    """

    def __init__(self, limit: int = DEFAULT_PARALLEL_CALLS) -> None:
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)
        self._count_lock = threading.Lock()
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        """Calls whose thread is still running (some may have been given up on)."""
        with self._count_lock:
            return self._in_flight

    def run(self, call: Callable[[], str], deadline: float) -> str:
        """`call()` in a thread; raises `_Failed` when no slot is free or the deadline passes."""
        if not self._slots.acquire(blocking=False):
            raise _Failed(_Attempt(f"all {self.limit} calls to it are still running", False))
        with self._count_lock:
            self._in_flight += 1
        result: Future[str] = Future()
        thread = threading.Thread(target=self._work, args=(call, result), daemon=True)
        thread.start()
        try:
            return result.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            raise _Failed(_TIMED_OUT) from None

    def _work(self, call: Callable[[], str], result: Future[str]) -> None:
        try:
            result.set_result(call())
        except BaseException as error:  # handed to the caller, who turns it into an error
            result.set_exception(error)
        finally:
            with self._count_lock:
                self._in_flight -= 1
            self._slots.release()


class ProviderHealth:
    """How one endpoint has been doing, remembered between calls (thread-safe).

    `FAILURES_TO_REST` failed calls in a row, a `Retry-After` longer than the call could wait,
    or (with `rest_on_timeout`, for a person waiting on the answer) one call that timed out (a
    hung model would cost every caller the whole timeout) give the endpoint a rest: `check` raises `ModelCoolingDown` until it is over, without a request. The
    first call after a rest is a trial: its failure starts a rest twice as long (up to
    `MAX_REST_S`), its success forgets every failure.
    """

    def __init__(
        self,
        failures_to_rest: int = FAILURES_TO_REST,
        rest_s: float = REST_S,
        *,
        rest_on_timeout: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._failures_to_rest = failures_to_rest
        self._rest_on_timeout = rest_on_timeout
        self._first_rest_s = rest_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._rest_s = rest_s
        self._resting_until: float | None = None
        self._last_failure = ""

    def check(self) -> None:
        """Raise `ModelCoolingDown` while the endpoint rests."""
        with self._lock:
            until = self._resting_until
            if until is None:
                return
            left = until - self._clock()
            if left <= 0:
                return
            failure, failures = self._last_failure, self._failures
        raise ModelCoolingDown(
            f"resting for {left:.0f} s after {failures} failed call(s) (last: {failure})", left
        )

    def succeeded(self) -> None:
        with self._lock:
            self._failures = 0
            self._rest_s = self._first_rest_s
            self._resting_until = None

    def failed(self, what: str, *, timed_out: bool = False, wait_s: float | None = None) -> None:
        """One failed call: `timed_out` when no answer came in time, `wait_s` when the server
        asked for a wait (`Retry-After`) the call could not give."""
        with self._lock:
            self._failures += 1
            self._last_failure = what
            trial = self._resting_until is not None  # a rest ended and the trial call failed
            urgent = (timed_out and self._rest_on_timeout) or wait_s is not None or trial
            if not urgent and self._failures < self._failures_to_rest:
                return
            rest = max(self._rest_s, min(wait_s or 0.0, MAX_REST_S))
            self._resting_until = self._clock() + rest
            self._rest_s = min(rest * 2.0, MAX_REST_S)
        logger.warning("model endpoint resting for %.0f s: %s", rest, what)

    @property
    def resting(self) -> bool:
        with self._lock:
            return self._resting_until is not None and self._resting_until > self._clock()


def make_client(endpoint: ModelEndpoint) -> OpenAI:
    """Build an `OpenAI` client for the endpoint, with the client's own retries switched off."""
    api_key = endpoint.api_key.get_secret_value() if endpoint.api_key is not None else _NO_KEY
    return OpenAI(
        api_key=api_key,
        base_url=endpoint.base_url,
        timeout=endpoint.timeout_s,
        max_retries=0,
    )


@dataclass(frozen=True)
class _Request:
    client: OpenAI
    model: str
    messages: Sequence[ChatCompletionMessageParam]
    temperature: float
    json_mode: bool


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
    gate: CallGate | None = None,
    health: ProviderHealth | None = None,
) -> str:
    """Send one chat completion and return the assistant's text, stripped.

    Each try must be answered completely within `timeout_s`; all tries and the waits between
    them within `timeout_s × (max_retries + 1)`. Retries on 429, 5xx, timeouts and connection
    errors, sleeping with exponential backoff and jitter, or as long as the server's
    `Retry-After` asks; a wait longer than `BACKOFF_CAP_S` or than the time left ends the call
    at once. Raises `ModelRequestRejected` at once on any other 4xx, `ModelCoolingDown` without
    a request while `health` says the endpoint rests, and `ModelUnavailable` for everything
    else that does not give a usable text; `health` hears how the call went.
    """
    if health is not None:
        health.check()
    try:
        text = _chat(
            _Request(client, model, messages, temperature, json_mode),
            max_retries,
            timeout_s,
            sleep,
            gate,
        )
    except _GaveUp as gave_up:
        if health is not None:
            health.failed(str(gave_up.error), timed_out=gave_up.timed_out, wait_s=gave_up.wait_s)
        raise gave_up.error from None
    if health is not None:
        health.succeeded()
    return text


class _GaveUp(Exception):
    """The call failed for good; carries the error to raise and what the health must know."""

    def __init__(self, error: ModelUnavailable, failure: _Attempt, wait_s: float | None) -> None:
        self.error = error
        self.timed_out = failure.timed_out
        self.wait_s = wait_s
        super().__init__(str(error))


def _chat(
    request: _Request, max_retries: int, timeout_s: float, sleep: Sleep, gate: CallGate | None
) -> str:
    gate = gate if gate is not None else _SHARED_GATE
    budget_end = time.monotonic() + timeout_s * (max_retries + 1)
    for attempt in range(max_retries + 1):
        deadline = min(time.monotonic() + timeout_s, budget_end)
        try:
            return _answer_text(gate.run(functools.partial(_try_once, request, deadline), deadline))
        except _Failed as failed:
            failure = failed.attempt
        left = budget_end - time.monotonic()
        asked = failure.retry_after_s
        too_long = asked is not None and asked > min(BACKOFF_CAP_S, left)
        delay = backoff_delay(attempt, asked)
        if not failure.retryable or attempt == max_retries or too_long or delay >= left:
            error = _give_up(request.client, request.model, failure, attempt + 1, timeout_s)
            raise _GaveUp(error, failure, asked if too_long else None)
        _log_retry(request.client, request.model, failure, attempt, max_retries, delay)
        sleep(delay)
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


def _try_once(request: _Request, deadline: float) -> str:
    """One HTTP exchange, in a gate thread: the content text, or `_Failed` for anything else."""
    try:
        return _completion_content(_read_body(request, deadline))
    except _Failed:
        raise
    except openai.APIError as error:
        raise _Failed(_classify(error)) from error
    except httpx.TimeoutException as error:
        raise _Failed(_TIMED_OUT) from error
    except (httpx.HTTPError, OSError) as error:
        raise _Failed(_Attempt(f"connection failed ({type(error).__name__})", True)) from error
    except Exception as error:  # the one rule: no other exception leaves a model call
        logger.warning("unexpected error from %s", request.model, exc_info=True)
        raise _Failed(_Attempt(f"unusable response ({type(error).__name__})", False)) from error


def _read_body(request: _Request, deadline: float) -> bytes:
    """The response body, read within the deadline and at most `MAX_RESPONSE_BYTES` long."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _Failed(_TIMED_OUT)
    with request.client.chat.completions.with_streaming_response.create(
        model=request.model,
        messages=list(request.messages),
        temperature=request.temperature,
        timeout=remaining,
        response_format={"type": "json_object"} if request.json_mode else omit,
    ) as response:
        content_type = response.headers.get("content-type", "")
        if "json" not in content_type.lower():
            what = f"answered {_short(content_type or 'no content type', 60)}, not JSON"
            raise _Failed(_Attempt(what, False))
        body = bytearray()
        for chunk in response.iter_bytes():  # as they arrive: a drip is seen byte by byte
            body += chunk
            if len(body) > MAX_RESPONSE_BYTES:
                limit_mb = MAX_RESPONSE_BYTES // (1024 * 1024)
                raise _Failed(_Attempt(f"answer larger than {limit_mb} MB", False))
            if time.monotonic() > deadline:
                raise _Failed(_TIMED_OUT)
    return bytes(body)


def _completion_content(body: bytes) -> str:
    """`choices[0].message.content` of a chat completion body, checked at every step."""
    try:
        payload = json.loads(body)
    except RecursionError:
        raise _Failed(_Attempt("answer is JSON nested too deep", False)) from None
    except ValueError as error:  # also UnicodeDecodeError
        raise _Failed(_Attempt(f"answer is not JSON ({_short(str(error), 80)})", False)) from None
    choices = payload.get("choices") if isinstance(payload, dict) else None
    first = choices[0] if isinstance(choices, list) and choices else None
    message = first.get("message") if isinstance(first, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):  # some servers answer with content parts
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    raise _Failed(_Attempt("answer has no text content", False))


def _classify(error: openai.APIError) -> _Attempt:
    if isinstance(error, openai.APITimeoutError):
        return _TIMED_OUT
    if isinstance(error, openai.APIConnectionError):
        return _Attempt(f"connection failed ({_short(error.message)})", retryable=True)
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


def _answer_text(content: str) -> str:
    text = content.strip()
    if not text:
        raise _Failed(_Attempt("answered with empty content", False))
    return text


def _give_up(
    client: OpenAI, model: str, failure: _Attempt, tries: int, timeout_s: float
) -> ModelUnavailable:
    plural = "try" if tries == 1 else "tries"
    what = f"timed out after {timeout_s:g} s" if failure.timed_out else failure.what
    if failure.retry_after_s is not None and failure.retryable:
        what += f", asked to wait {failure.retry_after_s:g} s"
    message = f"model {model} at {client.base_url}: {what} after {tries} {plural}"
    if failure.retryable or failure.status_code is None:
        return ModelUnavailable(message)
    return ModelRequestRejected(message, failure.status_code)


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


_SHARED_GATE = CallGate(DEFAULT_PARALLEL_CALLS * 2)  # for callers that bring no gate of their own
