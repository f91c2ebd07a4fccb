"""A stand-in for the core (`bot.ports.PhotoFinder`) for tests of the bot's own behaviour."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from index.models import RERANK_USED, Note, Recommendation, RecommendResult, Rerank


@dataclass(frozen=True)
class FakeStatus:
    photos: int = 3
    last_index_at: datetime | None = datetime(2024, 5, 1, 14, 30)
    indexing: bool = False
    problem: str | None = None


@dataclass
class FakeFinder:
    """Recommends the given files in order; raises `error` instead when it is set."""

    files: list[Path] = field(default_factory=list)
    rerank: Rerank = RERANK_USED
    notes: tuple[Note, ...] = ()
    error: BaseException | None = None
    status_value: FakeStatus = field(default_factory=FakeStatus)
    queries: list[str] = field(default_factory=list)
    images: list[bytes] = field(default_factory=list)
    slow_gate: threading.Event | None = None  # texts starting with "慢" wait for it

    def recommend(
        self, text: str, top_k: int | None = None, *, rerank: bool = True
    ) -> RecommendResult:
        self.queries.append(text)
        if self.slow_gate is not None and text.startswith("慢"):
            self.slow_gate.wait(timeout=30)
        return self._result(text)

    def similar_to_image(self, data: bytes, top_k: int | None = None) -> RecommendResult:
        self.images.append(data)
        return self._result("<image>")

    def status(self) -> FakeStatus:
        if self.error is not None:
            raise self.error
        return self.status_value

    def photo_path(self, photo_id: str) -> Path | None:
        path = Path(photo_id)
        return path if path.exists() else None

    def _result(self, query: str) -> RecommendResult:
        if self.error is not None:
            raise self.error
        results = [
            Recommendation(n, str(path), path.name, 0.9 - n / 100, 0.8, f"理由{n}：{path.stem}", "")
            for n, path in enumerate(self.files, start=1)
        ]
        return RecommendResult(query, results, {}, self.notes, self.rerank)
