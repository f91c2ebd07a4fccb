"""Rule-based query understanding: social text → semantic words + time/place filters.

"去年夏天在大理，蓝天白云" → semantic "蓝天白云", photos taken 1 Jun–31 Aug of last year in 大理.

Times: see `index.understanding.timewords`.

Places: a name of a Chinese province, city or district from the offline gazetteer
(`index.understanding.geo`). Official names of three characters or more ("杭州市", "白云区") and short names of
provinces and cities ("杭州", "大理") count anywhere; short district names ("白云", "西湖"), two-
character county names and city names that are also everyday words (安康, 日照, 朝阳, ...) count
only after a movement word: 在, 去(了), 到, 来到, 回到, 飞到, 抵达, 打卡, 前往, 路过, 途经, 从, 逛, 游,
住在, and not when 上/下 follows as a position ("坐在石柱上的女人": a stone pillar, not the county).
Scenery words (海边, 山上) are no place names and stay in the semantic text.

The first time and the first place found become the filters; every one found is removed from the
semantic text together with a following 的 and leftover particles.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from index.models import ParsedQuery, QueryFilters
from index.understanding.geo import Gazetteer, KnownName, default_gazetteer
from index.understanding.timewords import TimeRange, find_times

_EVERYDAY = "安康 长治 日照 白银 阿里 玉树 大同 朝阳 中山 红河 普洱 和田 哈密 三明 天水 山南 北海"
_EVERYDAY_WORDS = frozenset(_EVERYDAY.split())  # city names that are also ordinary words
_GENERIC = "城区 矿区 郊区 东区 西区 南区 北区 新区"
_GENERIC_NAMES = frozenset(_GENERIC.split())  # official names that are ordinary words
_CUE = re.compile(
    r"(?:住在|在|去了?|到了?|来到了?|来了|回到了?|回了|飞到了?|抵达|打卡|前往|路过|途经|从|逛了?|游了?)$"
)
_PUNCTUATION = " \t\n,.!?;:，。！？；：、…~～"
_PARTICLES = "的了啦呀啊吧呢哦嘛和跟与也都又在"  # trimmed only next to a removed time or place
_PLACE_CONTINUATIONS = frozenset("的之旅游玩行站街城市夜边郊古老景海山湖江河")
_CJK = re.compile(r"[\u4e00-\u9fff]")
_ON_OR_UNDER = re.compile(f"[上下](?:[的面边\\s{re.escape(_PUNCTUATION)}]|$)")
_LONGEST_NAME = 12
_LONGEST_CUE = 3  # 来到了


@dataclass(frozen=True)
class _Span:
    start: int
    end: int


class RuleBasedUnderstanding:
    """`QueryUnderstanding` by rules: Chinese time expressions and gazetteer place names."""

    def __init__(self, now: Callable[[], datetime], gazetteer: Gazetteer | None = None) -> None:
        self._now = now
        self._gazetteer = gazetteer

    def parse(self, text: str) -> ParsedQuery:
        """Split `text` into semantic words and filters; `notes` say what was understood."""
        taken: list[_Span] = []
        times = self._times(text, taken)
        places = self._places(text, taken)
        time_range = times[0] if times else None
        place = places[0].alias if places else None
        filters = None if time_range is None and place is None else _filters(time_range, place)
        semantic = _semantic_text(text, taken)
        return ParsedQuery(semantic, filters, _notes(time_range, place), _label(time_range, place))

    def _times(self, text: str, taken: list[_Span]) -> list[TimeRange]:
        found = find_times(text, self._now().date())
        taken.extend(_Span(f.start, f.end) for f in found)
        return [f.range for f in found]

    def _places(self, text: str, taken: list[_Span]) -> list[KnownName]:
        names = (self._gazetteer or default_gazetteer()).known_names()
        found: list[KnownName] = []
        position = 0
        while position < len(text):
            known = _place_at(text, position, names, taken)
            if known is None:
                position += 1
                continue
            cue = _cue_start(text, position)
            taken.append(_Span(position if cue is None else cue, position + len(known.alias)))
            position += len(known.alias)
            found.append(known)
        return found


def _place_at(
    text: str, position: int, names: dict[str, KnownName], taken: list[_Span]
) -> KnownName | None:
    """The longest gazetteer name at `position` that names a place in this text, if any."""
    cued = _cue_start(text, position) is not None
    for size in range(min(_LONGEST_NAME, len(text) - position), 1, -1):
        known = names.get(text[position : position + size])
        if known is None or not _free(taken, (position, position + size)):
            continue
        following = text[position + size :]
        if _counts(known, cued, following, names):
            return known
    return None


def _cue_start(text: str, position: int) -> int | None:
    """Where a movement word ending at `position` starts ("去了杭州" → 0), if there is one."""
    found = _CUE.search(text, max(0, position - _LONGEST_CUE), position)
    return found.start() if found else None


def _counts(known: KnownName, cued: bool, following: str, names: dict[str, KnownName]) -> bool:
    """Whether a gazetteer name names a place here (rules in the module docstring)."""
    if known.alias in _GENERIC_NAMES:
        return False
    if known.is_full and len(known.alias) >= 3:
        return True
    weak = known.level == "district" or known.alias in _EVERYDAY_WORDS
    if cued:
        # "坐在石柱上的女人": a thing one is on or under, though 石柱 is also a county
        return not (weak and _ON_OR_UNDER.match(following))
    if weak:
        return False
    return _ends_a_place_name(following, names)


def _ends_a_place_name(following: str, names: dict[str, KnownName]) -> bool:
    """ "杭州的", "杭州。", "杭州西湖", "大理古城": yes; "大理石", "兰州拉面": no."""
    if not following or not _CJK.match(following[0]) or following[0] in _PLACE_CONTINUATIONS:
        return True
    return any(
        following[:size] in names for size in range(2, min(_LONGEST_NAME, len(following)) + 1)
    )


def _free(taken: list[_Span], span: tuple[int, int]) -> bool:
    return all(span[1] <= other.start or span[0] >= other.end for other in taken)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time())


def _filters(time_range: TimeRange | None, place: str | None) -> QueryFilters:
    if time_range is None:
        return QueryFilters(place=place)
    return QueryFilters(_midnight(time_range.start), _midnight(time_range.end), place)


def _notes(time_range: TimeRange | None, place: str | None) -> tuple[str, ...]:
    notes: list[str] = []
    if time_range is not None:
        last = time_range.end - timedelta(days=1)
        dates = f"{time_range.start:%Y-%m-%d}"
        dates += "" if last == time_range.start else f" 至 {last:%Y-%m-%d}"
        notes.append(f"时间：{time_range.label}（{dates}）")
    if place is not None:
        notes.append(f"地点：{place}")
    return tuple(notes)


def _label(time_range: TimeRange | None, place: str | None) -> str:
    parts = [time_range.label] if time_range is not None else []
    return " ".join(parts + ([f"在{place}"] if place else []))


_MARKERS = {"!": "strict", "！": "strict", "~": "off", "～": "off", "?": "closest", "？": "closest"}


def split_markers(text: str) -> tuple[str, frozenset[str]]:
    """Leading short-form options of a text: "!" time/place strict, "~" time/place off,
    "?" show the closest photos even when none fits. "! 去年夏天的海边" → ("去年夏天的海边",
    {"strict"}). A marker counts only before text ("？？？" stays a text)."""
    found: set[str] = set()
    position = 0
    while position < len(text) and text[position] in _MARKERS:
        following = text[position + 1 : position + 2]
        if not following or (following in _MARKERS and not _ends_markers(text, position + 1)):
            break
        found.add(_MARKERS[text[position]])
        position += 1
    if not found:
        return text, frozenset()
    rest = text[position:].strip()
    return (rest, frozenset(found)) if rest else (text, frozenset())


def _ends_markers(text: str, position: int) -> bool:
    """True when the markers from `position` on are followed by real text."""
    while position < len(text) and text[position] in _MARKERS:
        position += 1
    return position < len(text) and not text[position:].isspace()


def _semantic_text(text: str, taken: list[_Span]) -> str:
    """The text without time and place words (and a 的 after them), trimmed of particles."""
    trim = _PUNCTUATION + _PARTICLES
    pieces: list[str] = []
    position = 0
    for span in sorted(taken, key=lambda s: s.start):
        before = text[position : span.start]
        pieces.append((before.lstrip(trim) if position else before).rstrip(trim))
        position = span.end + (1 if text[span.end : span.end + 1] == "的" else 0)
    pieces.append(text[position:].lstrip(trim) if taken else text)
    cleaned = (piece.strip(_PUNCTUATION) for piece in pieces)
    return " ".join(piece for piece in cleaned if piece)
