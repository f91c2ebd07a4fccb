"""Fixtures for the model clients: one real fake-OpenAI server per session, reset per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from config.settings import RerankSettings, VisionSettings
from tests.support.openai_server import FakeOpenAIServer

FAST_TIMEOUT_S = 2.0


class SleepRecorder:
    """Stands in for `time.sleep`: records the waits instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture(scope="session")
def _openai_server_session() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def openai_server(_openai_server_session: FakeOpenAIServer) -> FakeOpenAIServer:
    """The session's fake OpenAI-compatible server, well-behaved and with empty counters."""
    _openai_server_session.reset()
    return _openai_server_session


@pytest.fixture
def recorded_sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def fake_vision_settings(openai_server: FakeOpenAIServer) -> VisionSettings:
    """Vision settings pointing at the fake server, with a short timeout and 2 retries."""
    return VisionSettings(
        base_url=openai_server.base_url,
        model="fake-vl",
        timeout_s=FAST_TIMEOUT_S,
        max_retries=2,
        max_side=512,
    )


@pytest.fixture
def fake_rerank_settings(openai_server: FakeOpenAIServer) -> RerankSettings:
    """Rerank settings pointing at the fake server, with a short timeout and 1 retry."""
    return RerankSettings(
        base_url=openai_server.base_url,
        model="fake-chat",
        timeout_s=FAST_TIMEOUT_S,
        max_retries=1,
    )
