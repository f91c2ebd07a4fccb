"""Recommend photos for a text: understand → nearest by cosine → threshold → calibrated match
→ time/place as context → collapse near-duplicates → LLM rerank → top k.

Time and place words ("去年夏天", "在大理") are context by default (`time_place="prefer"`): photos
of that time/place that fit the text come first, then photos that fit the text from elsewhere;
a photo of that time/place that does not fit the text never outranks one that does. "strict"
keeps only photos of that time/place (relaxed, with a note, when there are none); "off" ignores
them. A text that is nothing but a time or place ("去年夏天在大理") is strict and skips the
threshold and the fit: the filters are then what the user asked for.

Whether a photo fits comes from `index.search.calibration` (background z-score and shared words, not
raw cosine). When none fits, the answer is empty and says so, unless the closest photos are
asked for (`closest=True`, or "?" before the text).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from config.settings import Settings
from index.errors import InvalidQuery, RerankFailed
from index.models import (
    RERANK_OFF,
    RERANK_USED,
    Candidate,
    Judgement,
    Note,
    NoteKind,
    ParsedQuery,
    QueryFilters,
    Recommendation,
    RecommendResult,
    Rerank,
    RerankState,
)
from index.ports import QueryUnderstanding, Reranker, Retriever
from index.ranking.reasons import match_reason
from index.search.calibration import Calibrator, Match
from index.understanding.filters import matches, relaxations
from index.understanding.query import split_markers

log = logging.getLogger(__name__)

MAX_QUERY_CHARS = 2000
_T = TypeVar("_T")
TimePlace = Literal["prefer", "strict", "off"]


_DEFAULTS = Settings.model_fields  # the one home of these defaults: `config.settings.Settings`


@dataclass(frozen=True)
class RecommendLimits:
    top_k_initial: int = _DEFAULTS["top_k_initial"].default
    similarity_threshold: float = _DEFAULTS["similarity_threshold"].default
    top_k_final: int = _DEFAULTS["top_k_final"].default
    time_place: TimePlace = _DEFAULTS["time_place"].default


@dataclass
class _Stage:
    """The first stage's answer: candidates in order, and what the reasons need to know."""

    found: list[Candidate]  # as searched, before threshold and collapse
    kept: list[Candidate]  # in order, thresholded, collapsed
    notes: list[Note]
    only_filters: bool = False
    window: QueryFilters | None = None  # the time/place the preferred photos match
    preferred: set[str] = field(default_factory=set)  # photo ids put first for the time/place


def _no_match(text: str, candidates: Sequence[Candidate]) -> dict[str, Match]:
    """Without a calibrator every photo fits, scored by its similarity."""
    return {c.photo_id: Match(round(max(0.0, c.similarity) * 100, 1), (), 0.0) for c in candidates}


class Recommender:
    """The recommendation path shared by the CLI, the bot, the server and `peitu eval`."""

    def __init__(
        self,
        retriever: Retriever,
        reranker: Reranker | None,
        limits: RecommendLimits,
        understanding: QueryUnderstanding | None = None,
        collapse: Callable[[list[Candidate]], list[Candidate]] | None = None,
        calibrator: Calibrator | None = None,
    ) -> None:
        self._retriever = retriever
        self._reranker = reranker
        self._limits = limits
        self._understanding = understanding
        self._collapse = collapse or (lambda candidates: candidates)
        self._calibrator = calibrator

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
        time_place: TimePlace | None = None,
        closest: bool = False,
    ) -> RecommendResult:
        """Best photos for `text`. Raises `InvalidQuery` for empty text.

        `understand=False` searches with the text as it is, without time/place words or
        markers (for a photo's own description, whose 拍摄时间/地名 are no request).
        `time_place` overrides the configured use of time/place words; `closest` returns the
        closest photos even when none fits. Leading markers in the text do the same: "!"
        strict, "~" off, "?" closest (`index.understanding.query.split_markers`)."""
        query = _clean_query(text)
        markers: frozenset[str] = frozenset()
        if understand:
            query, markers = split_markers(query)
        mode = _mode(markers, time_place or self._limits.time_place)
        closest = closest or "closest" in markers
        k = top_k or self._limits.top_k_final
        timings: dict[str, float] = {"embed": 0.0, "search": 0.0, "rerank": 0.0}
        parsed = self.parse(query) if understand else ParsedQuery(query)
        used_mode = mode if parsed.filters is not None else None
        if mode == "off" and parsed.filters is not None:
            parsed = ParsedQuery(parsed.semantic_text or query)
        pool = max(self._limits.top_k_initial, k) + len(exclude)
        stage = self._first_stage(parsed, query, mode, pool, set(exclude), timings)
        if not stage.kept:
            notes = stage.notes if stage.found else []  # an empty index: nothing else to say
            notes = [*notes, _no_match_note(stage.found)]
            return RecommendResult(query, [], _rounded(timings), tuple(notes), time_place=used_mode)
        found = self._matches(parsed.semantic_text or query, stage.kept)
        nothing_fits = not (stage.only_filters or any(m.fits for m in found.values()))
        if nothing_fits and not closest:
            return self._nothing_fits(query, stage, found, timings, used_mode)
        if not (rerank and self._reranker is not None):
            results, outcome = _vector_order(stage, found, k, parsed), RERANK_OFF
        else:
            results, outcome = self._reranked(query, stage, found, k, timings, parsed)
        notes = [*stage.notes, *([_CLOSEST] if nothing_fits else []), *_rerank_notes(outcome)]
        return RecommendResult(
            query, results, _rounded(timings), tuple(notes), outcome, nothing_fits, used_mode
        )

    def _matches(self, text: str, candidates: list[Candidate]) -> dict[str, Match]:
        if self._calibrator is None:
            return _no_match(text, candidates)
        scored = self._calibrator.matches(text, candidates)
        return {c.photo_id: m for c, m in zip(candidates, scored, strict=True)}

    def _nothing_fits(
        self,
        query: str,
        stage: _Stage,
        found: dict[str, Match],
        timings: dict[str, float],
        used_mode: str | None,
    ) -> RecommendResult:
        best = max(stage.kept, key=lambda c: found[c.photo_id].score)
        text = (
            "图库里没有适合这段文字的照片（最接近的是"
            f"「{_short(first_line(best.description), 20)}」，匹配度 {found[best.photo_id].score:.0f}）。"
        )
        notes = (*stage.notes, Note(NoteKind.NOTHING_FITS, text))
        return RecommendResult(
            query, [], _rounded(timings), notes, nothing_fits=True, time_place=used_mode
        )

    def _first_stage(
        self,
        parsed: ParsedQuery,
        query: str,
        mode: TimePlace,
        pool: int,
        exclude: set[str],
        timings: dict[str, float],
    ) -> _Stage:
        if parsed.filters is None:
            found = self._search(parsed.semantic_text or query, pool, None, exclude, timings)
            return _Stage(found, self._kept(found, self._limits.similarity_threshold), [])
        if mode == "strict" or not parsed.semantic_text:
            return self._strict(parsed, query, pool, exclude, timings)
        return self._prefer(parsed, pool, exclude, timings)

    def _search(
        self,
        text: str,
        pool: int,
        filters: QueryFilters | None,
        exclude: set[str],
        timings: dict[str, float],
    ) -> list[Candidate]:
        """Candidates under the filters; checked against them too, whatever the retriever did."""
        found = self._retriever.search(text, pool, filters, timings)
        return [c for c in found if c.photo_id not in exclude and matches(filters, c.metadata)]

    def _kept(self, found: list[Candidate], threshold: float) -> list[Candidate]:
        return self._collapse([c for c in found if c.similarity >= threshold])

    def _strict(
        self,
        parsed: ParsedQuery,
        query: str,
        pool: int,
        exclude: set[str],
        timings: dict[str, float],
    ) -> _Stage:
        """Only photos under the first filters that keep one (see `relaxations`)."""
        text = parsed.semantic_text or query
        only_filters = not parsed.semantic_text
        threshold = -1.0 if only_filters else self._limits.similarity_threshold
        found: list[Candidate] = []
        for filters, note in relaxations(parsed.filters):
            found = self._search(text, pool, filters, exclude, timings)
            kept = self._kept(found, threshold)
            if kept:
                relaxed = [Note(NoteKind.RELAXED, note)] if note else []
                return _Stage(found, kept, [*_understood(parsed), *relaxed], only_filters, filters)
        return _Stage(found, [], _understood(parsed), only_filters)

    def _prefer(
        self, parsed: ParsedQuery, pool: int, exclude: set[str], timings: dict[str, float]
    ) -> _Stage:
        """Photos of the time/place that fit the text first, then photos that fit from
        elsewhere, then the rest; each group most similar first."""
        text, threshold = parsed.semantic_text, self._limits.similarity_threshold
        inside = self._search(text, pool, parsed.filters, exclude, timings)
        everywhere = self._search(text, pool, None, exclude, timings)
        inside = [c for c in inside if c.similarity >= threshold]
        everywhere = [c for c in everywhere if c.similarity >= threshold]
        scored = self._matches(text, _unique(inside + everywhere))
        first = [c for c in inside if scored[c.photo_id].fits]
        fitting_elsewhere = [c for c in everywhere if scored[c.photo_id].fits]
        ordered = _unique(first + fitting_elsewhere + everywhere + inside)
        kept = self._collapse(ordered)
        preferred = {c.photo_id for c in first}
        note = Note(NoteKind.TIME_PLACE, _context_note(parsed.label, bool(first), bool(inside)))
        notes = [*_understood(parsed), note]
        return _Stage(everywhere, kept, notes, False, parsed.filters, preferred)

    def _reranked(
        self,
        query: str,
        stage: _Stage,
        found: dict[str, Match],
        k: int,
        timings: dict[str, float],
        parsed: ParsedQuery,
    ) -> tuple[list[Recommendation], Rerank]:
        """The photos in the LLM's order, or in vector order when it fails (and why)."""
        assert self._reranker is not None
        reranker, kept = self._reranker, stage.kept
        try:
            judged = _timed(timings, "rerank", lambda: reranker.rerank(query, kept))
        except RerankFailed as error:
            log.warning("rerank failed, falling back to vector order: %s", error)
            failed = Rerank(RerankState.FAILED, str(error) or type(error).__name__)
            return _vector_order(stage, found, k, parsed), failed
        return _merge(stage, found, judged, k, parsed), RERANK_USED


def _mode(markers: frozenset[str], configured: TimePlace) -> TimePlace:
    if "strict" in markers:
        return "strict"
    if "off" in markers:
        return "off"
    return configured


def _unique(candidates: list[Candidate]) -> list[Candidate]:
    seen: set[str] = set()
    out = []
    for c in candidates:
        if c.photo_id not in seen:
            seen.add(c.photo_id)
            out.append(c)
    return out


def _context_note(label: str, preferred: bool, any_inside: bool) -> str:
    if preferred:
        return f"优先显示 {label} 的照片"
    if any_inside:
        return f"{label} 的照片里没有合适的，已显示其他照片"
    return f"没有找到 {label} 的照片，已显示其他照片"


_CLOSEST = Note(NoteKind.CLOSEST, "没有完全适合的照片，以下是最接近的")


def _understood(parsed: ParsedQuery) -> list[Note]:
    """What the understanding read in the text (its time and place), as notes."""
    return [Note(NoteKind.UNDERSTOOD, text) for text in parsed.notes]


def _rerank_notes(outcome: Rerank) -> list[Note]:
    """A failed rerank's note: the photos are in vector order, and the short reason why."""
    if outcome.state is not RerankState.FAILED or outcome.reason is None:
        return []
    return [
        Note(
            NoteKind.RERANK_FAILED,
            f"智能排序暂不可用，已按相似度排列（{_short(outcome.reason, 60)}）",
        )
    ]


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
    """A reason built from the description alone (no text to match it against)."""
    return f"画面内容：{_short(first_line(candidate.description), 40)}"


def _reason(stage: _Stage, c: Candidate, match: Match, parsed: ParsedQuery) -> str:
    in_window = stage.window is not None and matches(stage.window, c.metadata)
    return match_reason(match, c.description, parsed.label if in_window else "")


def _vector_order(
    stage: _Stage, found: dict[str, Match], k: int, parsed: ParsedQuery
) -> list[Recommendation]:
    out = []
    for rank, c in enumerate(stage.kept[:k], start=1):
        match = found[c.photo_id]
        reason = _reason(stage, c, match, parsed)
        score = round(match.score / 100.0, 4)
        out.append(
            Recommendation(
                rank, c.photo_id, c.path, c.similarity, score, reason, c.description, match.score
            )
        )
    return out


def _merge(
    stage: _Stage, found: dict[str, Match], judged: list[Judgement], k: int, parsed: ParsedQuery
) -> list[Recommendation]:
    """Judged photos by score first (photos preferred for the time/place before the others);
    photos the LLM skipped follow in vector order."""
    by_id = {c.photo_id: c for c in stage.kept}
    ordered = [(by_id[j.photo_id], j.score, j.reason) for j in judged if j.photo_id in by_id]
    ordered.sort(key=lambda item: item[0].photo_id not in stage.preferred)  # stable
    judged_ids = {j.photo_id for j in judged}
    ordered += [
        (c, found[c.photo_id].score / 100.0, _reason(stage, c, found[c.photo_id], parsed))
        for c in stage.kept
        if c.photo_id not in judged_ids
    ]
    return [
        Recommendation(
            rank,
            c.photo_id,
            c.path,
            c.similarity,
            score,
            reason,
            c.description,
            found[c.photo_id].score,
        )
        for rank, (c, score, reason) in enumerate(ordered[:k], start=1)
    ]


def _no_match_note(found: list[Candidate]) -> Note:
    if not found:
        return Note(NoteKind.EMPTY_INDEX, "图库里还没有已索引的照片，请先运行 `peitu index`。")
    closest = found[0]
    text = (
        f"没有找到足够相关的照片。最接近的是「{_short(first_line(closest.description), 30)}」"
        f"（相似度 {closest.similarity:.2f}）。"
    )
    return Note(NoteKind.NO_MATCH, text)
