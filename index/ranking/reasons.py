"""Reasons without an LLM: one short Chinese line saying what in the photo matches the text.

Built from the calibrated match (`index.search.calibration`): the words the text and the description
share, the facets of the description they appear in (主体/场景/氛围 … of a vision model's
labelled description), and the time/place when the photo is of the time/place the text names.
Never an excerpt of the description: that is shown beside the reason anyway.
"""

from __future__ import annotations

from index.search.calibration import Match

MAX_REASON_CHARS = 40
_MAX_WORDS = 3
_FACET_SEPARATORS = "：:"
_LONGEST_FACET = 6


def match_reason(
    match: Match, description: str, time_place: str = "", shown_score: float | None = None
) -> str:
    """One line of at most `MAX_REASON_CHARS` characters; `time_place` is the time/place the
    text named (e.g. "去年夏天 在大理") when this photo is of it, else ""; `shown_score` the
    匹配度 shown when it is not the match's own."""
    if match.words:
        words = "".join(f"「{w}」" for w in _fewest(match.words))
        facets = facets_of(match.words, description)
        where = f"（{'、'.join(facets)}）" if facets else ""
        line = f"画面{where}有文中的{words}"
    elif match.fits:
        line = "画面与文字的意思相近"
    else:
        line = "画面与文字只是大致相关"
    if time_place:
        line += f"，拍于{time_place}"
    line += f"，匹配度{match.score if shown_score is None else shown_score:.0f}"
    return _short(line, MAX_REASON_CHARS)


def _fewest(words: tuple[str, ...]) -> list[str]:
    """Up to `_MAX_WORDS` shared words, longer (more specific) ones first, none inside another."""
    ordered = sorted(words, key=lambda w: -len(w))
    kept: list[str] = []
    for word in ordered:
        if not any(word in other for other in kept):
            kept.append(word)
    return kept[:_MAX_WORDS]


def facets_of(words: tuple[str, ...], description: str) -> list[str]:
    """Labels of the description's facet lines ("主体：…") that hold any of the words."""
    found: list[str] = []
    for line in description.splitlines():
        label, sep, rest = _split_facet(line.strip())
        if sep and any(w in rest for w in words) and label not in found:
            found.append(label)
    return found[:2]


def _split_facet(line: str) -> tuple[str, str, str]:
    for separator in _FACET_SEPARATORS:
        head, sep, rest = line.partition(separator)
        if sep and 0 < len(head) <= _LONGEST_FACET:
            return head.strip(), sep, rest
    return "", "", line


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
