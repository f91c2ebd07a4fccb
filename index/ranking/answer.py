"""From scored candidates to the photos a person sees: one order, one score, one rule.

Whatever decides the order is the score shown: without an LLM the calibrated 匹配度 (photos of
a time/place the text names that fit its words come first, their 匹配度 raised by that
context), with an LLM its score × 100. A photo fits at 匹配度 50 and up (`FIT`); a plain
answer holds only photos that fit, an answer that asked for the closest (`?`, `--closest`)
also the others, after them and marked `fits=False`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from index.models import Candidate, Judgement, Note, NoteKind, Recommendation
from index.ranking.reasons import match_reason
from index.search.calibration import FIT, Match


@dataclass(frozen=True)
class Scored:
    """A candidate with its calibrated match, and the time/place it is of (the text's label,
    "" when the photo is not of the time/place the text names)."""

    candidate: Candidate
    match: Match
    taken_in: str = ""

    @property
    def photo_id(self) -> str:
        return self.candidate.photo_id


def by_match(scored: Sequence[Scored]) -> list[Scored]:
    """Best 匹配度 first (its evidence, which the shown 匹配度 rounds; ties keep their order)."""
    return sorted(scored, key=lambda s: -s.match.evidence)


def calibrated_answer(ordered: Sequence[Scored], k: int, closest: bool) -> list[Recommendation]:
    """The first `k` photos that fit (with `closest`, then the others), in 匹配度 order."""
    shown = [s for s in ordered if s.match.fits or closest][:k]
    return [_recommendation(rank, s) for rank, s in enumerate(shown, start=1)]


def _recommendation(rank: int, s: Scored) -> Recommendation:
    c, m = s.candidate, s.match
    reason = match_reason(m, c.description, s.taken_in)
    return Recommendation(
        rank, c.photo_id, c.path, c.similarity, round(m.score / 100.0, 4), reason, c.description,
        m.score, m.fits,
    )  # fmt: skip


def llm_answer(
    ordered: Sequence[Scored], judged: Sequence[Judgement], k: int, closest: bool
) -> list[Recommendation]:
    """The LLM's order and its score as the 匹配度 (fits at 50): photos of the text's time/place
    first among those it judged; photos it did not judge follow the judged ones shown, at no
    higher a 匹配度 than the last of them (its verdict, not the vector, ranks the answer)."""
    by_id = {s.photo_id: s for s in ordered}
    kept = [(by_id[j.photo_id], j) for j in judged if j.photo_id in by_id]
    # stable: the LLM's order within each group
    kept.sort(key=lambda pair: not (pair[0].taken_in and pair[1].score * 100.0 >= FIT))
    shown = [_judged(s, j) for s, j in kept if j.score * 100.0 >= FIT or closest]
    if shown:
        floor = shown[-1].match
        judged_ids = {j.photo_id for j in judged}
        shown += [
            _unjudged(s, floor)
            for s in ordered
            if s.photo_id not in judged_ids and (s.match.fits or closest)
        ]
    return [_ranked(r, rank) for rank, r in enumerate(shown[:k], start=1)]


def _judged(s: Scored, j: Judgement) -> Recommendation:
    c = s.candidate
    match = round(j.score * 100.0, 1)
    return Recommendation(
        0, c.photo_id, c.path, c.similarity, j.score, j.reason, c.description, match, match >= FIT
    )


def _unjudged(s: Scored, floor: float) -> Recommendation:
    c = s.candidate
    match = min(s.match.score, floor)
    reason = match_reason(s.match, c.description, s.taken_in, shown_score=match)
    return Recommendation(
        0, c.photo_id, c.path, c.similarity, round(match / 100.0, 4), reason, c.description,
        match, s.match.fits and match >= FIT,
    )  # fmt: skip


def _ranked(r: Recommendation, rank: int) -> Recommendation:
    return Recommendation(
        rank, r.photo_id, r.path, r.similarity, r.score, r.reason, r.description, r.match, r.fits
    )


CLOSEST = Note(NoteKind.CLOSEST, "没有完全适合的照片，以下是最接近的（匹配度不到 50）")
RERANK_FAILED = Note(NoteKind.RERANK_FAILED, "排序模型暂时不可用，已按匹配度排序。")
RERANK_OFF = Note(
    NoteKind.RERANK_OFF,
    "已按匹配度排序。想让大模型来排序并写理由：设置 DASHSCOPE_API_KEY，或用本地 Ollama。",
)


def nothing_fits_note(closest: Candidate | None, kind: NoteKind = NoteKind.NOTHING_FITS) -> Note:
    """What an answer without a photo that fits says: the closest subject, never a score that
    could read as a near miss for an unrelated photo."""
    if closest is None:
        return Note(kind, "图库里没有适合这段文字的照片。")
    subject = short(first_line(closest.description), 20)
    return Note(kind, f"图库里没有适合这段文字的照片（最接近的是「{subject}」）。")


def first_line(description: str) -> str:
    """The description's first meaningful line, without a facet label such as '主体：'."""
    for line in description.splitlines():
        line = line.strip()
        if line:
            head, sep, rest = line.partition("：")
            return rest.strip() if sep and len(head) <= 6 and rest.strip() else line
    return description.strip()


def short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
