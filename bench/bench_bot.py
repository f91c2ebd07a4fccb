"""Bot benchmark: reply latency over the real local WeChat gateway, message in to last image out.

Indexes 30 photos of ../shared/eval (their captions as descriptions), starts the local fake
OpenAI server as the reranking LLM, the Node gateway (tests/wechat/gateway, needs
`bash scripts/setup_node.sh`) and the real bot, then sends `/配图 <caption>` requests one after
another and times each on the gateway's clock, from the message entering the gateway to the
last image of the reply leaving the bot. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_bot.py [--requests 50] [--llm-delay-ms 0]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from config import load_settings  # noqa: E402
from config.settings import ChatSettings, WechatSettings  # noqa: E402
from index.search.embed import SentenceTransformerEmbedder  # noqa: E402
from index.service import PeiTu  # noqa: E402
from index.wiring import build_app  # noqa: E402
from tests.support.core_fixtures import build_small_library  # noqa: E402
from tests.support.openai_server import FakeOpenAIServer  # noqa: E402
from tests.wechat.harness import GATEWAY_DIR, WechatHarness  # noqa: E402


def _percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    return f"median {statistics.median(ordered):7.1f} ms   p95 {p95:7.1f} ms   max {ordered[-1]:7.1f} ms"


def _one_request(chat: WechatHarness, text: str) -> tuple[float, float, int]:
    """(ms to the text reply, ms to the last image, images) on the gateway's clock."""
    chat.say(f"/配图 {text}")
    sent = chat.expect(lambda e: e.get("event") == "injected", what="injected")
    reply, _ = chat.reply()
    photos = sum(1 for line in reply["text"].splitlines() if line[:1].isdigit())
    files = [chat.expect(lambda e: e.get("event") == "bot-said" and bool(e.get("fileName")))]
    files += [chat.expect(lambda e: bool(e.get("fileName"))) for _ in range(photos - 1)]
    return reply["ms"] - sent["ms"], files[-1]["ms"] - sent["ms"], photos


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--llm-delay-ms", type=float, default=0.0, help="fake LLM answer delay")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAIServer() as llm:
        llm.set_mode("rerank", delay_s=args.llm_delay_ms / 1000.0)
        app, queries = _indexed_app(Path(tmp), llm.base_url)
        chat = WechatHarness(GATEWAY_DIR, Path(tmp) / "gateway.log")
        try:
            start = time.perf_counter()
            rules = ChatSettings(rate_limit_per_minute=0, allow_everyone=True)
            chat.start(app, WechatSettings(), Path(tmp) / "cache", chat=rules)
            print(f"gateway up and bot logged in: {time.perf_counter() - start:.2f} s")
            _run(chat, queries, args.requests)
            print(
                f"LLM rerank calls: {llm.calls['rerank']} (fake server, delay {args.llm_delay_ms:g} ms)"
            )
        finally:
            chat.close()
            app.close()


def _indexed_app(tmp: Path, llm_url: str) -> tuple[PeiTu, list[str]]:
    """The real core over 30 indexed photos, reranking on the fake LLM; and the queries."""
    library = build_small_library(tmp)
    settings = load_settings(
        library=library.root,
        data_dir=tmp / "data",
        embedding={"model": str(REPO / "models" / "m3e-small")},
        rerank={"base_url": llm_url, "model": "fake-chat", "timeout_s": 30.0},
    )
    embedder = SentenceTransformerEmbedder(settings.embedding.model)
    indexer = build_app(settings, descriptions=library.descriptions, embedder=embedder)
    indexer.index()
    indexer.close()
    app = build_app(settings, embedder=embedder)  # as the bot runs it
    return app, [photo.captions[4] for photo in library.photos]


def _run(chat: WechatHarness, queries: list[str], count: int) -> None:
    _one_request(chat, queries[0])  # warm-up: first embedding, first Chroma query
    to_text, to_last, photos = [], [], []
    for n in range(count):
        text_ms, last_ms, sent = _one_request(chat, queries[n % len(queries)])
        to_text.append(text_ms)
        to_last.append(last_ms)
        photos.append(sent)
    print(f"requests: {count} sequential `/配图 …`, {statistics.mean(photos):.1f} images per reply")
    print(f"message in -> text reply out:  {_percentiles(to_text)}")
    print(f"message in -> last image out:  {_percentiles(to_last)}")


if __name__ == "__main__":
    main()
