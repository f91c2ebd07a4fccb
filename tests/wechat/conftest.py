"""Fixtures for the WeChat tests: a real gateway and the real bot, against a fake or real core."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.ports import BotPairing, PhotoFinder
from bot.server_client import ServerFinder
from config.settings import ChatSettings, Settings, WechatSettings, load_settings
from index.search.embed import SentenceTransformerEmbedder
from index.service import PeiTu
from index.wiring import build_app
from server.app import create_app
from tests.server.conftest import TOKEN as ADMIN_TOKEN
from tests.server.conftest import serving
from tests.support.core_fixtures import SmallLibrary, build_small_library, m3e_small_path
from tests.support.openai_server import FakeOpenAIServer
from tests.wechat.harness import WechatHarness, require_gateway, running_harness

StartWechat = Callable[..., WechatHarness]


@pytest.fixture(scope="session")
def gateway_dir() -> Path:
    """tests/wechat/gateway with its npm packages (fails under CI=true when they are missing)."""
    return require_gateway()


@pytest.fixture
def start_wechat(gateway_dir: Path, tmp_path: Path) -> Iterator[StartWechat]:
    """`start_wechat(finder, pairing=None, **settings)`: a gateway plus a logged-in bot (the
    settings named by `ChatSettings` go to the chat core, the others to `WechatSettings`),
    torn down after. The bot answers everyone unless the test says otherwise (`allow_everyone`,
    an allow-list): who is served is tests/wechat/test_pairing.py's subject."""
    with contextlib.ExitStack() as stack:

        def start(
            finder: PhotoFinder, pairing: BotPairing | None = None, **settings: Any
        ) -> WechatHarness:
            listed = settings.get("allow_contacts") or settings.get("allow_rooms")
            settings.setdefault("allow_everyone", not listed and pairing is None)
            chat = {k: settings.pop(k) for k in list(settings) if k in ChatSettings.model_fields}
            harness = running_harness(
                gateway_dir,
                tmp_path / "gateway.log",
                finder,
                WechatSettings(**settings),
                tmp_path / "bot-cache",
                pairing,
                ChatSettings(**chat),
            )
            return stack.enter_context(harness)

        yield start


@dataclass(frozen=True)
class IndexedLibrary:
    library: SmallLibrary
    data_dir: Path


@pytest.fixture(scope="session")
def indexed_library(
    tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder
) -> IndexedLibrary:
    """30 eval photos indexed once per session from their captions (a sidecar JSONL)."""
    root = tmp_path_factory.mktemp("wechat-library")
    library = build_small_library(root)
    data_dir = root / "data"
    settings = load_settings(
        library=library.root,
        data_dir=data_dir,
        embedding={"model": str(m3e_small_path())},
        rerank={"enabled": False},
    )
    app = build_app(settings, descriptions=library.descriptions, embedder=embedder)
    try:
        report = app.index()
    finally:
        app.close()
    assert report.embedded == len(library.photos), report.to_dict()
    return IndexedLibrary(library, data_dir)


def core_settings(indexed: IndexedLibrary, llm_base_url: str, **overrides: Any) -> Settings:
    """Settings for the real core over the indexed library, both models on the fake server."""
    llm = {"base_url": llm_base_url, "timeout_s": 1.5, "max_retries": 0}
    values: dict[str, Any] = {
        "library": indexed.library.root,
        "data_dir": indexed.data_dir,
        "embedding": {"model": str(m3e_small_path())},
        "rerank": {**llm, "model": "fake-chat"},
        "vision": {**llm, "model": "fake-vl"},
    }
    return load_settings(**(values | overrides))


@pytest.fixture
def peitu(
    indexed_library: IndexedLibrary,
    openai_server: FakeOpenAIServer,
    embedder: SentenceTransformerEmbedder,
) -> Iterator[PeiTu]:
    """The real core (`build_app`) over the indexed library; rerank and vision on the fake LLM."""
    app = build_app(core_settings(indexed_library, openai_server.base_url), embedder=embedder)
    yield app
    app.close()


@pytest.fixture(params=["core", "server"])
def bot_finder(
    request: pytest.FixtureRequest,
    peitu: PeiTu,
    indexed_library: IndexedLibrary,
    openai_server: FakeOpenAIServer,
) -> Iterator[PhotoFinder]:
    """What the bot asks, in both of its modes: the core in its own process (`peitu bot` alone),
    or `ServerFinder` over HTTP to the real FastAPI app around that same core on a real port
    (`PEITU_BOT__SERVER_URL`). A test compares the bot's replies with what `peitu` answers."""
    if request.param == "core":
        yield peitu
        return
    settings = core_settings(indexed_library, openai_server.base_url, admin_token=ADMIN_TOKEN)
    with serving(create_app(peitu, settings)) as url:
        finder = ServerFinder(url, ADMIN_TOKEN, timeout_s=30)
        try:
            yield finder
        finally:
            finder.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """python-wechaty's FileBox calls the deprecated `logger.warn` for every image it sends."""
    quiet = pytest.mark.filterwarnings("ignore:The 'warn' method is deprecated:DeprecationWarning")
    for item in items:
        if "tests/wechat/" in item.nodeid:
            item.add_marker(quiet)
