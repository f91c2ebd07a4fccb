"""Recommend photos for a text: understand → nearest by cosine under the time/place filters →
threshold → collapse near-duplicates → LLM rerank → top k.

Filters are hard when they leave at least one photo; otherwise they are relaxed (see
`index.filters.relaxations`) and the result's message says which condition was ignored. A text
that is nothing but a time or place ("去年夏天在大理") searches with the whole text and skips the
similarity threshold: the filters are then what the user asked for.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from index.errors import InvalidQuery, RerankFailed
from index.filters import matches, relaxations
from index.models import Candidate, Judgement, ParsedQuery, Recommendation, RecommendResult
from index.ports import QueryUnderstanding, Reranker, Retriever

log = logging.getLogger(__name__)

MAX_QUERY_CHARS = 2000
_T = TypeVar("_T")


@dataclass(frozen=True)
class RecommendLimits:
    top_k_initial: int = 20
    similarity_threshold: float = 0.5
    top_k_final: int = 5


class Recommender:
    """The recommendation path shared by the CLI, the bot, the server and `peitu eval`."""

    def __init__(
        self,
        retriever: Retriever,
        reranker: Reranker | None,
        limits: RecommendLimits,
        understanding: QueryUnderstanding | None = None,
        collapse: Callable[[list[Candidate]], list[Candidate]] | None = None,
    ) -> None:
        self._retriever = retriever
        self._reranker = reranker
        self._limits = limits
        self._understanding = understanding
        self._collapse = collapse or (lambda candidates: candidates)

    def parse(self, text: str) -> ParsedQuery:
        """The text as the first stage sees it (semantic words + filters)."""
        if self._understanding is None:
            return ParsedQuery(text)
        return self._understanding.parse(text)

    def recommend(
        self,
        text: str,
        top_k: int | None = None,
        *,
        rerank: bool = True,
        exclude: Sequence[str] = (),
        understand: bool = True,
    ) -> RecommendResult:
        """Best photos for `text`. Raises `InvalidQuery` for empty text.

        `understand=False` searches with the text as it is, without time/place filters (for a
        photo's own description, whose 拍摄时间/地名 are no request)."""
        query = _clean_query(text)
        k = top_k or self._limits.top_k_final
        timings: dict[str, float] = {"embed": 0.0, "search": 0.0, "rerank": 0.0}
        parsed = self.parse(query) if understand else ParsedQuery(query)
        pool = max(self._limits.top_k_initial, k) + len(exclude)
        found, kept, notes = self._first_stage(parsed, query, pool, set(exclude), timings)
        if not kept:
            message = _no_match_message(found)
            notes = notes if found else []  # an empty index: nothing else is worth saying
            return RecommendResult(query, False, _joined(notes, message), [], _rounded(timings))
        if not (rerank and self._reranker is not None):
            result = RecommendResult(query, False, None, _vector_order(kept, k), _rounded(timings))
        else:
            result = self._reranked(query, kept, k, timings)
        result.message = _joined(notes, result.message)
        return result

    def _first_stage(
        self,
        parsed: ParsedQuery,
        query: str,
        pool: int,
        exclude: set[str],
        timings: dict[str, float],
    ) -> tuple[list[Candidate], list[Candidate], list[str]]:
        """(found, kept after threshold and collapse, notes) under the first filters that keep
        a photo. Candidates are checked against the filters too, whatever the retriever did."""
        text = parsed.semantic_text or query
        found: list[Candidate] = []
        kept: list[Candidate] = []
        for filters, note in relaxations(parsed.filters):
            found = self._retriever.search(text, pool, filters, timings)
            found = [c for c in found if c.photo_id not in exclude and matches(filters, c.metadata)]
            only_filters = filters is not None and not parsed.semantic_text
            threshold = -1.0 if only_filters else self._limits.similarity_threshold
            kept = self._collapse([c for c in found if c.similarity >= threshold])
            if kept:
                return found, kept, [*parsed.notes, *([note] if note else [])]
        return found, kept, list(parsed.notes)

    def _reranked(
        self, query: str, kept: list[Candidate], k: int, timings: dict[str, float]
    ) -> RecommendResult:
        assert self._reranker is not None
        reranker = self._reranker
        try:
            judged = _timed(timings, "rerank", lambda: reranker.rerank(query, kept))
        except RerankFailed as error:
            log.warning("rerank failed, falling back to vector order: %s", error)
            message = "智能排序暂不可用，已按相似度排列（" + _short(str(error), 60) + "）"
            return RecommendResult(query, False, message, _vector_order(kept, k), _rounded(timings))
        return RecommendResult(query, True, None, _merge(kept, judged, k), _rounded(timings))


def _joined(notes: Sequence[str], message: str | None) -> str | None:
    """The understanding's notes, then the message, on one line; None when there is neither."""
    parts = [*notes, *([message] if message else [])]
    return "；".join(parts) if parts else None


def _clean_query(text: str) -> str:
    query = " ".join(text.split())
    if not query:
        raise InvalidQuery("请给出要配图的文字（text is empty）")
    return query[:MAX_QUERY_CHARS]


def _timed(timings: dict[str, float], name: str, work: Callable[[], _T]) -> _T:
    start = time.perf_counter()
    try:
        return work()
    finally:
        timings[name] += (time.perf_counter() - start) * 1000.0


def _rounded(timings: dict[str, float]) -> dict[str, float]:
    return {name: round(ms, 2) for name, ms in timings.items()}


def first_line(description: str) -> str:
    """The description's first meaningful line, without a facet label such as '主体：'."""
    for line in description.splitlines():
        line = line.strip()
        if line:
            head, sep, rest = line.partition("：")
            return rest.strip() if sep and len(head) <= 6 and rest.strip() else line
    return description.strip()


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def description_reason(candidate: Candidate) -> str:
    """A reason built from the description, for when no LLM judged the photo."""
    return f"画面内容：{_short(first_line(candidate.description), 40)}"


def _vector_order(candidates: list[Candidate], k: int) -> list[Recommendation]:
    return [
        Recommendation(
            rank=rank,
            photo_id=c.photo_id,
            path=c.path,
            similarity=c.similarity,
            score=round(c.similarity, 4),
            reason=description_reason(c),
            description=c.description,
        )
        for rank, c in enumerate(candidates[:k], start=1)
    ]


def _merge(candidates: list[Candidate], judged: list[Judgement], k: int) -> list[Recommendation]:
    """Judged photos by score first; photos the LLM skipped follow in vector order."""
    by_id = {c.photo_id: c for c in candidates}
    ordered = [(by_id[j.photo_id], j.score, j.reason) for j in judged if j.photo_id in by_id]
    judged_ids = {j.photo_id for j in judged}
    ordered += [(c, 0.0, description_reason(c)) for c in candidates if c.photo_id not in judged_ids]
    return [
        Recommendation(rank, c.photo_id, c.path, c.similarity, score, reason, c.description)
        for rank, (c, score, reason) in enumerate(ordered[:k], start=1)
    ]


def _no_match_message(found: list[Candidate]) -> str:
    if not found:
        return "图库里还没有已索引的照片，请先运行 `peitu index`。"
    closest = found[0]
    return (
        f"没有找到足够相关的照片。最接近的是「{_short(first_line(closest.description), 30)}」"
        f"（相似度 {closest.similarity:.2f}）。"
    )
