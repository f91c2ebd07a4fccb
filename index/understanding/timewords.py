"""Chinese time expressions in social text → date ranges, relative to a given day.

Times (relative to the injected clock; a range's end is exclusive):
- 今天/今日/今早/今晚, 昨天/昨日/昨晚, 前天, 大前天: that day.
- 这周/本周/上周/上上周 (星期, 礼拜 too), with 末 for the weekend (Sat–Sun) or a weekday
  (上周五); 周末 alone is the latest weekend that has begun.
- 这个月/本月/上个月; 今年/去年/前年/大前年, "2024年", "24年".
- Seasons with a year (去年夏天, 2024年春季): meteorological, 春 Mar–May, 夏 Jun–Aug,
  秋 Sep–Nov, 冬 Dec to end of Feb. A season without a year (夏天) stays in the semantic text.
- Months and days: "2024年5月", "5月", "五月份", "5月1日", "5月1号"; without a year, the latest
  one that has begun.
- Holidays, with or without a year: 国庆 (1–7 Oct), 元旦 (1–3 Jan: the usual three-day break),
  春节/过年 — APPROXIMATE: 20 Jan–26 Feb, which holds every Spring Festival holiday (New Year's
  Day falls between 21 Jan and 20 Feb) but also weeks around it; no lunar calendar is used.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

_CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5}
_CN_DIGITS |= {"六": 6, "七": 7, "八": 8, "九": 9}
_NUM = r"\d{1,2}|[一二三四五六七八九十]{1,3}"
_YEAR = (
    r"(?P<year>今年|去年|前年|大前年|(?P<y4>\d{4})年|(?<!\d)(?P<y2>\d{2})年(?![前后来间里多代级]))"
)
_SEASONS = {"春": (3, 3), "夏": (6, 3), "秋": (9, 3), "冬": (12, 3)}  # first month, months
_RELATIVE_YEARS = {"今年": 0, "去年": 1, "前年": 2, "大前年": 3}
_RELATIVE_DAYS = {"今": 0, "昨": 1, "前": 2, "大前": 3}
_WEEK_OFFSETS = {"这": 0, "本": 0, "上": 1, "上上": 2}
_WEEKDAYS = "一二三四五六日天"
Today = date


@dataclass(frozen=True)
class TimeRange:
    start: date
    end: date  # exclusive
    label: str


def _year(match: re.Match[str], today: Today) -> int | None:
    if match.group("y4"):
        return int(match.group("y4"))
    if match.group("y2"):
        return 2000 + int(match.group("y2"))
    relative = match.group("year")
    return today.year - _RELATIVE_YEARS[relative] if relative else None


def _number(text: str) -> int:
    if text.isdigit():
        return int(text)
    if "十" not in text:
        return _CN_DIGITS.get(text, 0)
    tens, _, ones = text.partition("十")
    return (_CN_DIGITS.get(tens, 0) if tens else 1) * 10 + (_CN_DIGITS.get(ones, 0) if ones else 0)


def _add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def _latest_year(year: int | None, starts: Callable[[int], date], today: Today) -> int:
    """The stated year, else the latest year whose occurrence has begun by today."""
    if year is not None:
        return year
    return today.year if starts(today.year) <= today else today.year - 1


def _season(match: re.Match[str], today: Today) -> TimeRange | None:
    year = _year(match, today)
    first, months = _SEASONS[match.group("season")]
    start = date(year or today.year, first, 1)
    return TimeRange(start, _add_months(start, months), match.group(0))


def _holiday(match: re.Match[str], today: Today) -> TimeRange | None:
    name = match.group("holiday")
    month, day, days = (10, 1, 7) if "国庆" in name or "十一" in name else (1, 1, 3)
    if name in ("春节", "过年"):
        month, day, days = 1, 20, 38
    year = _latest_year(_year(match, today), lambda y: date(y, month, day), today)
    start = date(year, month, day)
    return TimeRange(start, start + timedelta(days=days), match.group(0))


def _month(match: re.Match[str], today: Today) -> TimeRange | None:
    month = _number(match.group("month"))
    day = _number(match.group("day")) if match.group("day") else 1
    explicit = _year(match, today)
    try:
        year = _latest_year(explicit, lambda y: date(y, month, day), today)
        start = date(year, month, day)
    except ValueError:  # 13月, 2月30日
        return None
    end = start + timedelta(days=1) if match.group("day") else _add_months(start, 1)
    return TimeRange(start, end, match.group(0))


def _whole_year(match: re.Match[str], today: Today) -> TimeRange | None:
    year = _year(match, today) or today.year
    return TimeRange(date(year, 1, 1), date(year + 1, 1, 1), match.group(0))


def _day(match: re.Match[str], today: Today) -> TimeRange | None:
    start = today - timedelta(days=_RELATIVE_DAYS[match.group("which")])
    return TimeRange(start, start + timedelta(days=1), match.group(0))


def _week(match: re.Match[str], today: Today) -> TimeRange | None:
    monday = today - timedelta(days=today.weekday() + 7 * _WEEK_OFFSETS[match.group("which")])
    part = match.group("part")
    if not part:
        return TimeRange(monday, monday + timedelta(days=7), match.group(0))
    first, days = (5, 2) if part == "末" else (min(_WEEKDAYS.index(part), 6), 1)
    start = monday + timedelta(days=first)
    return TimeRange(start, start + timedelta(days=days), match.group(0))


def _weekend(match: re.Match[str], today: Today) -> TimeRange | None:
    saturday = today - timedelta(days=(today.weekday() - 5) % 7)
    return TimeRange(saturday, saturday + timedelta(days=2), match.group(0))


def _relative_month(match: re.Match[str], today: Today) -> TimeRange | None:
    start = _add_months(today.replace(day=1), -1 if match.group("which") == "上" else 0)
    return TimeRange(start, _add_months(start, 1), match.group(0))


_TimeRule = tuple[re.Pattern[str], Callable[[re.Match[str], Today], TimeRange | None]]
_HOLIDAYS = r"(?P<holiday>国庆节?假期|国庆节?|十一黄金周|十一长假|春节|过年|元旦)"
_TIME_RULES: tuple[_TimeRule, ...] = (
    (re.compile(_YEAR + r"的?(?P<season>[春夏秋冬])(?:天|季)"), _season),
    (re.compile(_YEAR + r"?的?" + _HOLIDAYS), _holiday),
    (re.compile(_YEAR + rf"?(?P<month>{_NUM})月份?(?:(?P<day>{_NUM})[日号])?"), _month),
    (re.compile(_YEAR), _whole_year),
    (re.compile(r"(?P<which>大前|(?<![目之以提从向面当眼空事])前|昨|今)(?:天|日|早|晚|夜)"), _day),
    (re.compile(rf"(?P<which>上上|上|这|本)个?(?:周|星期|礼拜)(?P<part>末|[{_WEEKDAYS}])?"), _week),
    (re.compile(r"周末"), _weekend),
    (re.compile(r"(?P<which>上|这|本)个?月"), _relative_month),
)


@dataclass(frozen=True)
class FoundTime:
    """A time expression found at text[start:end]."""

    start: int
    end: int
    range: TimeRange


def find_times(text: str, today: date) -> list[FoundTime]:
    """Every time expression in `text`, in text order; earlier rules win where they overlap."""
    found: list[FoundTime] = []
    for pattern, resolve in _TIME_RULES:
        for match in pattern.finditer(text):
            free = all(match.end() <= f.start or match.start() >= f.end for f in found)
            result = resolve(match, today) if free else None
            if result is not None:
                found.append(FoundTime(match.start(), match.end(), result))
    return sorted(found, key=lambda f: f.start)
