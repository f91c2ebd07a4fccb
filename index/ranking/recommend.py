"""Recommend photos for a text: understand → nearest by cosine → threshold → calibrated match
→ time/place as context → collapse near-duplicates → LLM rerank (when there is one) → top k.

One order, one score, one rule (`index.ranking.answer`): the photos come in the order of the
匹配度 each shows (the calibrated match, or the LLM's score when it judged them), and a plain
answer holds only photos at 50 and up. When none fits the answer is empty and says so, unless
the closest photos are asked for (`closest=True`, or "?" before the text).

Time and place words ("去年夏天", "在大理") are context by default (`time_place="prefer"`): the
photos of that time/place are searched as well as the whole library, and those that fit the
text come first (their 匹配度 raised by that context), then photos that fit from elsewhere; a
photo of that time/place that does not fit the text never outranks one that does. "strict"
keeps only photos of that time/place (relaxed, with a note, when there are none); "off" ignores
them. A text that is nothing but a time or place ("去年夏天在大理") is strict, and every photo
of it fits: the filters are then what the user asked for. A note about the time/place is
given only when it changed the answer.

Photos of distressing content (`index.ranking.social`) are left out unless the text names
such content itself or is clearly about the photo.
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
from index.ranking import answer
from index.ranking.answer import Scored, by_match, first_line, short
from index.ranking.social import DistressingWords, clearly_about, unasked_distress
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
    """The first stage's answer: candidates in order, and what the notes need to know."""

    found: list[Candidate]  # as searched, before threshold and collapse
    kept: list[Candidate]  # thresholded, collapsed
    notes: list[Note]  # said whatever the answer (a relaxed strict filter)
    only_filters: bool = False
    window: QueryFilters | None = None  # the time/place whose photos are context
    label: str = ""  # that time/place as the text said it
    context: list[Note] = field(default_factory=list)  # said when the time/place mattered


def _no_match(candidates: Sequence[Candidate]) -> list[Match]:
    """Without a calibrator every photo fits, scored by its similarity."""
    return [Match.of_similarity(c.similarity) for c in candidates]


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
        *,
        rerank_note: Note | None = None,
        distressing: DistressingWords | None = None,
    ) -> None:
        """`rerank_note` is said when there is no reranker for a reason the person can act
        on (no API key); `distressing` the word list of `index.ranking.social`."""
        self._retriever = retriever
        self._reranker = reranker
        self._limits = limits
        self._understanding = understanding
        self._collapse = collapse or (lambda candidates: candidates)
        self._calibrator = calibrator
        self._rerank_note = rerank_note if reranker is None else None
        self._distressing = distressing or DistressingWords.read()

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
        scored = self._scored(parsed.semantic_text or query, stage)
        request = _Request(query, k, closest, rerank, used_mode)
        return self._answer(request, stage, scored, timings)

    def _answer(
        self, request: _Request, stage: _Stage, scored: list[Scored], timings: dict[str, float]
    ) -> RecommendResult:
        fitting = stage.only_filters or any(s.match.fits for s in scored)
        if not scored or not (fitting or request.closest):
            return _nothing_fits(request, stage, scored, timings)
        if request.rerank and self._reranker is not None:
            results, outcome = self._reranked(request, scored, timings)
        else:
            results, outcome = (
                answer.calibrated_answer(scored, request.k, request.closest),
                RERANK_OFF,
            )
        context = _context_notes(stage, scored, results)
        notes = [*stage.notes, *context, *_closest_note(results), *self._outcome_notes(outcome)]
        return _result(request, stage, results, outcome, timings, notes)

    def _outcome_notes(self, outcome: Rerank) -> list[Note]:
        if outcome.state is RerankState.FAILED:
            return [answer.RERANK_FAILED]
        return [self._rerank_note] if self._rerank_note is not None else []

    def _scored(self, text: str, stage: _Stage) -> list[Scored]:
        """The kept candidates with their matches, best first; a distressing photo only when
        the text names such content or is clearly about the photo (`CLEARLY_ABOUT`)."""
        found = self._matches(text, stage.kept)
        scored = [
            self._in_context(stage, c, m)
            for c, m in zip(stage.kept, found, strict=True)
            if not unasked_distress(self._distressing, text, c.description)
            or clearly_about(self._distressing, text, m.score)
        ]
        return by_match(scored)

    def _in_context(self, stage: _Stage, c: Candidate, match: Match) -> Scored:
        if stage.window is None or not matches(stage.window, c.metadata):
            return Scored(c, match)
        if stage.only_filters:
            match = Match.of_filters()
        if match.fits and self._calibrator is not None:
            match = self._calibrator.in_context(match)
        return Scored(c, match, stage.label)

    def _matches(self, text: str, candidates: list[Candidate]) -> list[Match]:
        if self._calibrator is None:
            return _no_match(candidates)
        return self._calibrator.matches(text, candidates)

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
        understood = _understood(parsed)
        for filters, note in relaxations(parsed.filters):
            found = self._search(text, pool, filters, exclude, timings)
            kept = self._kept(found, threshold)
            if kept:
                relaxed = [Note(NoteKind.RELAXED, note)] if note else []
                label = parsed.label if filters is not None else ""
                return _Stage(found, kept, [*understood, *relaxed], only_filters, filters, label)
        return _Stage(found, [], understood, only_filters)

    def _prefer(
        self, parsed: ParsedQuery, pool: int, exclude: set[str], timings: dict[str, float]
    ) -> _Stage:
        """The photos of the time/place and the whole library's, searched apart and merged:
        a fitting photo of that summer counts even when thousands of others fit the words."""
        text, threshold = parsed.semantic_text, self._limits.similarity_threshold
        inside = self._search(text, pool, parsed.filters, exclude, timings)
        everywhere = self._search(text, pool, None, exclude, timings)
        merged = _unique([c for c in inside + everywhere if c.similarity >= threshold])
        note = Note(NoteKind.TIME_PLACE, f"优先显示 {parsed.label} 的照片")
        context = [*_understood(parsed), note]
        return _Stage(
            everywhere, self._collapse(merged), [], False, parsed.filters, parsed.label, context
        )

    def _reranked(
        self, request: _Request, scored: list[Scored], timings: dict[str, float]
    ) -> tuple[list[Recommendation], Rerank]:
        """The photos in the LLM's order, or in 匹配度 order when it fails (and why)."""
        assert self._reranker is not None
        reranker, kept = self._reranker, [s.candidate for s in scored]
        try:
            judged = _timed(timings, "rerank", lambda: reranker.rerank(request.query, kept))
        except RerankFailed as error:
            log.warning("rerank failed, answering in 匹配度 order: %s", error)
            failed = Rerank(RerankState.FAILED, str(error) or type(error).__name__)
            return answer.calibrated_answer(scored, request.k, request.closest), failed
        return answer.llm_answer(scored, judged, request.k, request.closest), RERANK_USED


@dataclass(frozen=True)
class _Request:
    query: str
    k: int
    closest: bool
    rerank: bool
    time_place: str | None  # how time/place words were used, None when the text names none


def _result(
    request: _Request,
    stage: _Stage,
    results: list[Recommendation],
    outcome: Rerank,
    timings: dict[str, float],
    notes: list[Note],
) -> RecommendResult:
    nothing_fits = not stage.only_filters and not any(r.fits for r in results)
    return RecommendResult(
        request.query,
        results,
        _rounded(timings),
        tuple(notes),
        outcome,
        nothing_fits,
        request.time_place,
    )


def _context_notes(
    stage: _Stage, scored: list[Scored], results: list[Recommendation]
) -> list[Note]:
    """The time/place notes, when a fitting photo of that time/place is in the answer (the
    words changed nothing otherwise)."""
    of_window = {s.photo_id for s in scored if s.taken_in}
    return stage.context if any(r.fits and r.photo_id in of_window for r in results) else []


def _closest_note(results: list[Recommendation]) -> list[Note]:
    return [answer.CLOSEST] if results and not any(r.fits for r in results) else []


def _nothing_fits(
    request: _Request, stage: _Stage, scored: list[Scored], timings: dict[str, float]
) -> RecommendResult:
    if not stage.found:  # an empty index: nothing else to say
        note = Note(NoteKind.EMPTY_INDEX, "图库里还没有已索引的照片，请先运行 `peitu index`。")
        return RecommendResult(request.query, [], _rounded(timings), (note,))
    notes = (*stage.notes, _nothing_fits_note(stage, scored))
    return RecommendResult(
        request.query,
        [],
        _rounded(timings),
        notes,
        nothing_fits=True,
        time_place=request.time_place,
    )


def _nothing_fits_note(stage: _Stage, scored: list[Scored]) -> Note:
    """Names the closest photo that may be shown: the best scored one, or, when none passed
    the similarity threshold, the nearest found (never a distressing one: `scored` has none)."""
    if scored or not stage.found:
        return answer.nothing_fits_note(scored[0].candidate if scored else None)
    shown = {s.photo_id for s in scored}
    nearest = next((c for c in stage.found if c.photo_id not in shown), None)
    return answer.nothing_fits_note(nearest, NoteKind.NO_MATCH)


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


def _understood(parsed: ParsedQuery) -> list[Note]:
    """What the understanding read in the text (its time and place), as notes."""
    return [Note(NoteKind.UNDERSTOOD, text) for text in parsed.notes]


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


def description_reason(candidate: Candidate) -> str:
    """A reason built from the description alone (no text to match it against)."""
    return f"画面内容：{short(first_line(candidate.description), 40)}"
