"""Answers a user can trust (issue 27) over real HTTP: no key means no rerank call (counted by
a real proxy every HTTPS request would go through), a provider that is down or hung costs one
answer, and every note a person reads is calm Chinese; the doctor tests a chat call."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from config import load_settings
from tests.server.conftest import TOKEN, Served, ServerFactory
from tests.support.core_fixtures import SmallLibrary, build_small_library
from tests.support.openai_server import FakeOpenAIServer

TEXT = "一只狗在草地上奔跑"
_MACHINE_WORDS = re.compile(r"https?:|failed|error|rerank|qwen|fake-chat|timed out|HTTP", re.I)


class CountingProxy:
    """An HTTP(S) proxy that counts the connections made to it and answers none: set as
    HTTPS_PROXY, it sees every request to DashScope that would leave the machine."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self.requests: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            with connection:
                self.requests.append(connection.recv(200))

    def close(self) -> None:
        self._socket.close()


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[CountingProxy]:
    counting = CountingProxy()
    monkeypatch.setenv("HTTPS_PROXY", counting.url)
    monkeypatch.setenv("https_proxy", counting.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("DASHSCOPE_API_KEY", raising=False)
    yield counting
    counting.close()


@pytest.fixture
def library(tmp_path: Path) -> SmallLibrary:
    return build_small_library(tmp_path / "lib", 30)


def serve(
    start_server: ServerFactory, library: SmallLibrary, tmp_path: Path, **settings: Any
) -> Served:
    config = load_settings(
        library=library.root,
        data_dir=tmp_path / "data",
        admin_token=TOKEN,
        embedding={"model": str(Path(__file__).resolve().parents[2] / "models" / "m3e-small")},
        visual={"backend": "off"},
        **settings,
    )
    served = start_server(config, descriptions=library.descriptions, library=library)
    assert served.app.index().embedded == 30
    return served


def shown(body: dict[str, Any]) -> list[str]:
    """Every line of an answer a person reads."""
    return [note["text"] for note in body["notes"]] + [r["reason"] for r in body["results"]]


def test_without_a_key_no_request_leaves_the_machine_and_one_calm_note_says_how(
    start_server: ServerFactory, library: SmallLibrary, tmp_path: Path, proxy: CountingProxy
) -> None:
    served = serve(start_server, library, tmp_path)  # the defaults: rerank on, DashScope
    with served.client() as client:
        body = client.post("/api/recommend", json={"text": TEXT}).json()
        checks = {c["name"]: c for c in client.get("/api/doctor").json()["checks"]}
    assert body["results"] and body["rerank"] == {"state": "off", "reason": None}
    assert [note["kind"] for note in body["notes"]] == ["rerank_off"]
    assert "DASHSCOPE_API_KEY" in body["notes"][0]["text"]
    assert not re.search(r"https?:|failed|error", body["message"], re.I)
    assert (
        checks["rerank"]["level"] == "ok"
        and "未配置（按匹配度排序）" in checks["rerank"]["message"]
    )
    assert proxy.requests == []  # not one CONNECT to dashscope.aliyuncs.com


def test_with_a_key_the_same_answer_does_call_so_the_proxy_would_have_seen_it(
    start_server: ServerFactory, library: SmallLibrary, tmp_path: Path, proxy: CountingProxy
) -> None:
    """The other side of the test above: with a key the reranker asks DashScope, through the
    proxy (which answers nothing, so the answer falls back and says so calmly)."""
    key = "sk-0123456789abcdef0123456789abcdef"
    served = serve(start_server, library, tmp_path, rerank={"api_key": key, "timeout_s": 2})
    with served.client() as client:
        body = client.post("/api/recommend", json={"text": TEXT}).json()
    assert any(b"dashscope.aliyuncs.com" in request for request in proxy.requests)
    assert body["rerank"]["state"] == "failed" and "dashscope" in body["rerank"]["reason"]
    assert [note["kind"] for note in body["notes"]] == ["rerank_failed"]
    assert not any(_MACHINE_WORDS.search(line) for line in shown(body))


def test_a_local_endpoint_needs_no_key_and_is_used(
    start_server: ServerFactory,
    library: SmallLibrary,
    tmp_path: Path,
    openai_server: FakeOpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DASHSCOPE_API_KEY", raising=False)
    local = {"base_url": openai_server.base_url, "model": "fake-chat"}  # an Ollama, no key
    served = serve(start_server, library, tmp_path, rerank=local)
    with served.client() as client:
        body = client.post("/api/recommend", json={"text": TEXT}).json()
    assert body["rerank"]["state"] == "used" and openai_server.calls["rerank"] == 1
    shown_scores = [round(r["match"]) for r in body["results"]]
    assert shown_scores == sorted(shown_scores, reverse=True) and min(shown_scores) >= 50


@pytest.mark.parametrize(
    ("trouble", "calls_in_the_first_answer"),
    [
        ({"hostile": "hang"}, 2),  # the try and its retry, within the first answer's budget
        ({"fail_status": 429, "fail_times": 100, "retry_after_s": 3600}, 1),  # no retry
        ({"hostile": "html"}, 1),  # a captive portal's page: no retry
    ],
    ids=["hung", "retry-after-an-hour", "html-with-200"],
)
def test_a_provider_that_is_down_costs_one_answer_and_each_answer_says_so_once(
    start_server: ServerFactory,
    library: SmallLibrary,
    tmp_path: Path,
    openai_server: FakeOpenAIServer,
    trouble: dict[str, Any],
    calls_in_the_first_answer: int,
) -> None:
    """A hung model or an hour's Retry-After: the first answer's calls, then none; an answer it
    cannot use (HTML with 200): three answers' calls, then none."""
    rerank = {"base_url": openai_server.base_url, "model": "fake-chat", "timeout_s": 1}
    served = serve(start_server, library, tmp_path, rerank=rerank | {"max_retries": 1})
    openai_server.set_mode("rerank", **trouble)
    answers, calls = [], []
    with served.client() as client:
        for _ in range(5):
            answers.append(client.post("/api/recommend", json={"text": TEXT}).json())
            calls.append(openai_server.calls["rerank"])
    rests_after = 1 if calls_in_the_first_answer == 2 or "retry_after_s" in trouble else 3
    assert calls[0] == calls_in_the_first_answer
    assert calls[rests_after - 1 :] == [calls[rests_after - 1]] * (6 - rests_after), calls
    for body in answers:
        assert body["results"] and body["rerank"]["state"] == "failed"
        kinds = [note["kind"] for note in body["notes"]]
        assert kinds == ["rerank_failed"], kinds  # one note, in every answer
        assert not any(_MACHINE_WORDS.search(line) for line in shown(body)), shown(body)
        matches = [round(r["match"]) for r in body["results"]]
        assert matches == sorted(matches, reverse=True) and min(matches) >= 50
    assert "fake-chat" in answers[0]["rerank"]["reason"]  # the English detail stays in JSON


def test_the_doctor_asks_the_model_one_chat_question(
    start_server: ServerFactory,
    library: SmallLibrary,
    tmp_path: Path,
    openai_server: FakeOpenAIServer,
) -> None:
    """`GET /models` answers even when every call to the model hangs: the check sends one short
    chat request, and says the model did not answer it."""
    rerank = {"base_url": openai_server.base_url, "model": "fake-chat", "timeout_s": 1}
    served = serve(start_server, library, tmp_path, rerank=rerank)
    with served.client() as client:
        healthy = {c["name"]: c for c in client.get("/api/doctor").json()["checks"]}
        openai_server.set_mode("text", hostile="hang")
        hung = {c["name"]: c for c in client.get("/api/doctor").json()["checks"]}
    assert healthy["rerank"]["level"] == "ok" and "能回答对话请求" in healthy["rerank"]["message"]
    assert hung["rerank"]["level"] == "fail"
    assert "没有正常回答一次对话请求" in hung["rerank"]["message"]
