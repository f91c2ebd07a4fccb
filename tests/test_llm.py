"""`index.llm` through the real `openai` client against the real local fake server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import pytest
from openai.types.chat import ChatCompletionMessageParam
from pydantic import SecretStr

from config.settings import ModelEndpoint
from index.errors import ModelCoolingDown, ModelUnavailable
from index.llm import (
    BACKOFF_CAP_S,
    FAILURES_TO_REST,
    REST_S,
    CallGate,
    ModelRequestRejected,
    ProviderHealth,
    backoff_delay,
    chat,
    make_client,
)
from tests.support.fixtures import SleepRecorder
from tests.support.openai_server import FakeOpenAIServer

MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "你是测试助手。"},
    {"role": "user", "content": "你好，配图"},
]


def endpoint(server: FakeOpenAIServer, **changes: object) -> ModelEndpoint:
    return ModelEndpoint.model_validate(
        {"base_url": server.base_url, "model": "fake-chat"} | changes
    )


def ask(
    server: FakeOpenAIServer,
    sleeps: SleepRecorder,
    *,
    max_retries: int = 2,
    timeout_s: float = 2.0,
    json_mode: bool = False,
) -> str:
    client = make_client(endpoint(server))
    return chat(
        client,
        "fake-chat",
        MESSAGES,
        max_retries=max_retries,
        timeout_s=timeout_s,
        json_mode=json_mode,
        sleep=sleeps,
    )


def test_make_client_uses_the_endpoint_and_leaves_retries_to_us(
    openai_server: FakeOpenAIServer,
) -> None:
    client = make_client(endpoint(openai_server, api_key=SecretStr("sk-test"), timeout_s=7.5))
    assert client.api_key == "sk-test"
    assert str(client.base_url).rstrip("/") == openai_server.base_url
    assert client.max_retries == 0
    assert client.timeout == 7.5


def test_make_client_without_a_key_sends_a_placeholder(openai_server: FakeOpenAIServer) -> None:
    assert make_client(endpoint(openai_server)).api_key == "EMPTY"


def test_chat_returns_the_answer_and_sends_what_it_was_given(
    openai_server: FakeOpenAIServer, recorded_sleeps: SleepRecorder
) -> None:
    assert ask(openai_server, recorded_sleeps) == "回声：你好，配图"
    [request] = openai_server.requests_of("text")
    assert request.body["model"] == "fake-chat"
    assert request.body["temperature"] == 0.0
    assert request.body["messages"] == MESSAGES
    assert "response_format" not in request.body
    assert recorded_sleeps.waits == []


def test_json_mode_asks_for_a_json_object(
    openai_server: FakeOpenAIServer, recorded_sleeps: SleepRecorder
) -> None:
    ask(openai_server, recorded_sleeps, json_mode=True)
    [request] = openai_server.requests_of("text")
    assert request.body["response_format"] == {"type": "json_object"}


def test_a_429_is_retried_after_a_backoff(
    openai_server: FakeOpenAIServer, recorded_sleeps: SleepRecorder
) -> None:
    openai_server.set_mode("text", fail_status=429, fail_times=1)
    assert ask(openai_server, recorded_sleeps) == "回声：你好，配图"
    assert openai_server.calls["text"] == 2
    assert openai_server.injected["text:status_429"] == 1
    [wait] = recorded_sleeps.waits
    assert 0.25 <= wait <= 0.5


def test_retry_after_is_honoured_and_a_longer_one_than_the_cap_ends_the_call_at_once(
    openai_server: FakeOpenAIServer, recorded_sleeps: SleepRecorder
) -> None:
    openai_server.set_mode("text", fail_status=429, fail_times=1, retry_after_s=3)
    ask(openai_server, recorded_sleeps)
    assert recorded_sleeps.waits == [3.0] and openai_server.calls["text"] == 2
    openai_server.set_mode("text", fail_status=503, fail_times=1, retry_after_s=120)
    with pytest.raises(ModelUnavailable, match="asked to wait 120 s after 1 try"):
        ask(openai_server, recorded_sleeps, timeout_s=10.0)  # 30 s of budget: 120 s is more
    assert recorded_sleeps.waits == [3.0]  # no wait for a provider that asked for two minutes
    assert openai_server.calls["text"] == 3


def test_a_retry_after_beyond_the_budget_ends_the_call_without_waiting(
    openai_server: FakeOpenAIServer, recorded_sleeps: SleepRecorder
) -> None:
    openai_server.set_mode("text", fail_status=429, fail_times=5, retry_after_s=3600)
    with pytest.raises(ModelUnavailable, match="HTTP 429"):
        ask(openai_server, recorded_sleeps, max_retries=2, timeout_s=2.0)  # 6 s of budget
    assert recorded_sleeps.waits == []
    assert openai_server.calls["text"] == 1


def test_5xx_on_every_try_gives_model_unavailable_naming_model_and_endpoint(
    openai_server: FakeOpenAIServer, recorded_sleeps: SleepRecorder
) -> None:
    openai_server.set_mode("text", fail_status=500, fail_times=10)
    with pytest.raises(ModelUnavailable) as raised:
        ask(openai_server, recorded_sleeps, max_retries=3)
    message = str(raised.value)
    assert "fake-chat" in message and openai_server.base_url in message
    assert "HTTP 500" in message and "4 tries" in message
    assert not isinstance(raised.value, ModelRequestRejected)
    assert openai_server.calls["text"] == 4
    assert len(recorded_sleeps.waits) == 3
    for attempt, wait in enumerate(recorded_sleeps.waits):
        ceiling = 0.5 * 2**attempt
        assert ceiling / 2 <= wait <= ceiling


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_other_4xx_are_not_retried(
    openai_server: FakeOpenAIServer, recorded_sleeps: SleepRecorder, status: int
) -> None:
    openai_server.set_mode("text", fail_status=status, fail_times=5)
    with pytest.raises(ModelRequestRejected) as raised:
        ask(openai_server, recorded_sleeps, max_retries=3)
    assert raised.value.status_code == status
    assert f"HTTP {status}" in str(raised.value)
    assert openai_server.calls["text"] == 1
    assert recorded_sleeps.waits == []


def test_a_timeout_is_retried_then_reported(
    openai_server: FakeOpenAIServer, recorded_sleeps: SleepRecorder
) -> None:
    openai_server.set_mode("text", delay_s=2.5)
    # 2 s of budget: the first try ends at 1 s, the backoff (at most 0.5 s) fits before the end
    with pytest.raises(ModelUnavailable, match=r"timed out after 1 s after 2 tries"):
        ask(openai_server, recorded_sleeps, max_retries=1, timeout_s=1.0)
    assert openai_server.calls["text"] == 2
    assert len(recorded_sleeps.waits) == 1


def test_a_refused_connection_is_retried_then_reported(recorded_sleeps: SleepRecorder) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = make_client(ModelEndpoint(base_url=f"http://127.0.0.1:{port}/v1", model="m"))
    with pytest.raises(ModelUnavailable, match="connection failed"):
        chat(client, "m", MESSAGES, max_retries=2, timeout_s=1.0, sleep=recorded_sleeps)
    assert len(recorded_sleeps.waits) == 2


def test_empty_content_is_an_error(
    openai_server: FakeOpenAIServer, recorded_sleeps: SleepRecorder
) -> None:
    openai_server.set_mode("text", empty=True)
    with pytest.raises(ModelUnavailable, match="empty content"):
        ask(openai_server, recorded_sleeps)
    assert openai_server.calls["text"] == 1


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    for attempt in range(8):
        ceiling = min(BACKOFF_CAP_S, 0.5 * 2**attempt)
        assert ceiling / 2 <= backoff_delay(attempt) <= ceiling
    assert backoff_delay(0, retry_after_s=2.5) == 2.5
    assert backoff_delay(0, retry_after_s=-4) == 0.0


@pytest.mark.parametrize("hostile", ["html", "truncated", "deep", "braces"])
def test_a_broken_answer_is_model_unavailable_without_retrying(
    openai_server: FakeOpenAIServer, recorded_sleeps: SleepRecorder, hostile: str
) -> None:
    openai_server.set_mode("text", hostile=hostile)
    try:
        answer = ask(openai_server, recorded_sleeps, max_retries=2)
    except ModelUnavailable as error:
        assert "fake-chat" in str(error) and "1 try" in str(error)
    else:  # 200,000 braces are a text; the reranker's JSON reading refuses them
        assert hostile == "braces" and answer == "{" * 200_000
    assert openai_server.calls["text"] == 1


def test_a_drip_is_cut_at_the_deadline_and_frees_its_slot(
    openai_server: FakeOpenAIServer, recorded_sleeps: SleepRecorder
) -> None:
    """One byte a second: the call ends at its deadline, and the thread reading it soon after
    (a slot still taken would fail the second call at once with "still running")."""
    openai_server.set_mode("text", hostile="drip")
    gate = CallGate(1)
    client = make_client(endpoint(openai_server))
    for _ in range(2):
        with pytest.raises(ModelUnavailable, match=r"timed out after 1 s after 1 try"):
            chat(client, "m", MESSAGES, max_retries=0, timeout_s=1.0, gate=gate)
        wait_until_free(gate, timeout_s=5.0)


def test_a_full_gate_fails_at_once(openai_server: FakeOpenAIServer) -> None:
    openai_server.set_mode("text", hostile="hang")
    gate = CallGate(1)
    client = make_client(endpoint(openai_server))
    outcomes: list[str] = []

    def hold_the_slot() -> None:
        try:
            chat(client, "m", MESSAGES, max_retries=0, timeout_s=2.0, gate=gate)
        except ModelUnavailable as error:
            outcomes.append(str(error))

    holder = threading.Thread(target=hold_the_slot)
    holder.start()
    wait_until(lambda: openai_server.calls["text"] == 1)
    with pytest.raises(ModelUnavailable, match="all 1 calls to it are still running"):
        chat(client, "m", MESSAGES, max_retries=3, timeout_s=2.0, gate=gate)
    assert openai_server.calls["text"] == 1
    holder.join()
    assert len(outcomes) == 1 and "timed out" in outcomes[0]


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def wait_until_free(gate: CallGate, timeout_s: float) -> None:
    wait_until(lambda: gate.in_flight == 0, timeout_s)


# --- provider health: memory between calls --------------------------------------------------------


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ask_with(
    server: FakeOpenAIServer, health: ProviderHealth, *, timeout_s: float = 2.0, retries: int = 0
) -> str:
    client = make_client(endpoint(server))
    return chat(
        client, "fake-chat", MESSAGES, max_retries=retries, timeout_s=timeout_s, health=health
    )


@pytest.mark.parametrize("hostile", ["html", "truncated", "deep"])
def test_failed_calls_in_a_row_rest_the_endpoint_then_one_call_tries_again(
    openai_server: FakeOpenAIServer, hostile: str
) -> None:
    """An HTML page with 200 (a captive portal), truncated or absurdly deep JSON: each a
    failed call; after three in a row no request is sent until the rest is over."""
    clock = Clock()
    health = ProviderHealth(clock=clock)
    openai_server.set_mode("text", hostile=hostile)
    for _ in range(FAILURES_TO_REST):
        with pytest.raises(ModelUnavailable):
            ask_with(openai_server, health)
    assert openai_server.calls["text"] == FAILURES_TO_REST
    with pytest.raises(ModelCoolingDown) as resting:
        ask_with(openai_server, health)
    assert openai_server.calls["text"] == FAILURES_TO_REST  # refused without a request
    assert resting.value.left_s == pytest.approx(REST_S)
    clock.now += REST_S + 1
    openai_server.set_mode("text", hostile="")
    assert ask_with(openai_server, health) == "回声：你好，配图"  # the trial call
    assert not health.resting and openai_server.calls["text"] == FAILURES_TO_REST + 1


def test_a_failed_trial_call_rests_the_endpoint_twice_as_long(
    openai_server: FakeOpenAIServer,
) -> None:
    clock = Clock()
    health = ProviderHealth(clock=clock)
    openai_server.set_mode("text", fail_status=500, fail_times=100)
    for _ in range(FAILURES_TO_REST):
        with pytest.raises(ModelUnavailable):
            ask_with(openai_server, health)
    clock.now += REST_S + 1
    with pytest.raises(ModelUnavailable, match="HTTP 500"):
        ask_with(openai_server, health)  # the trial: sent, and failed
    with pytest.raises(ModelCoolingDown) as resting:
        ask_with(openai_server, health)
    assert resting.value.left_s == pytest.approx(2 * REST_S)
    assert openai_server.calls["text"] == FAILURES_TO_REST + 1


def test_a_retry_after_of_an_hour_rests_the_endpoint_for_an_hour_after_one_request(
    openai_server: FakeOpenAIServer,
) -> None:
    clock = Clock()
    health = ProviderHealth(clock=clock)
    openai_server.set_mode("text", fail_status=429, fail_times=10, retry_after_s=3600)
    started = time.monotonic()
    with pytest.raises(ModelUnavailable, match="asked to wait 3600 s"):
        ask_with(openai_server, health, retries=3)
    with pytest.raises(ModelCoolingDown) as resting:
        ask_with(openai_server, health, retries=3)
    assert time.monotonic() - started < 5.0  # no 8 s wait, no second try
    assert openai_server.calls["text"] == 1
    assert resting.value.left_s == pytest.approx(3600)
    clock.now += 3000
    with pytest.raises(ModelCoolingDown):
        ask_with(openai_server, health)
    assert openai_server.calls["text"] == 1


def test_a_hung_model_costs_one_request_when_a_person_waits(
    openai_server: FakeOpenAIServer,
) -> None:
    """The reranker's health (`rest_on_timeout`): one call waits the timeout, the next ones
    are refused at once; the vision describer's (in a job) keeps trying until three failed."""
    openai_server.set_mode("text", hostile="hang")
    waiting = ProviderHealth(rest_on_timeout=True)
    with pytest.raises(ModelUnavailable, match="timed out after 1 s"):
        ask_with(openai_server, waiting, timeout_s=1.0)
    for _ in range(3):
        with pytest.raises(ModelCoolingDown):
            ask_with(openai_server, waiting, timeout_s=1.0)
    assert openai_server.calls["text"] == 1
    in_a_job = ProviderHealth()
    with pytest.raises(ModelUnavailable, match="timed out"):
        ask_with(openai_server, in_a_job, timeout_s=1.0)
    assert not in_a_job.resting and openai_server.calls["text"] == 2
