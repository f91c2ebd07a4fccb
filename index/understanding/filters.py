"""Time/place filters (`QueryFilters`) applied to photo metadata: `matches` is the rule. Each
vector store applies it in its own way in the first stage (Chroma as a `where` clause, built in
`index.search.store`), and the recommender checks every candidate's metadata against it afterwards.

Times are compared as camera wall-clock time: EXIF gives no time zone, so the index stores
`taken_ts` as the wall-clock time read as if it were UTC (`wall_clock_ts`) and the filter
converts its bounds the same way. The result does not depend on the machine's time zone.
Places match when any of place_province/place_city/place_district is one of the official names
the filter's name stands for (see `index.understanding.geo`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from index.models import QueryFilters
from index.understanding.geo import METADATA_KEYS, default_gazetteer


def wall_clock_ts(moment: datetime) -> float:
    """A naive camera time as seconds, read as UTC; aware times are converted to UTC first."""
    if moment.tzinfo is not None:
        return moment.astimezone(UTC).timestamp()
    return moment.replace(tzinfo=UTC).timestamp()


def place_names(place: str) -> tuple[str, ...]:
    """The official names a place name stands for ("大理" → 大理市, 大理白族自治州)."""
    return default_gazetteer().full_names(place) or (place,)


def matches(filters: QueryFilters | None, metadata: Mapping[str, Any]) -> bool:
    """True when a photo's metadata satisfies the filters: the rule every vector store's
    `query` applies (Chroma's `where`, see `index.search.store.chroma_where`, says the same)."""
    if filters is None:
        return True
    return _in_time(filters, metadata.get("taken_ts")) and _at_place(filters.place, metadata)


def _in_time(filters: QueryFilters, taken_ts: Any) -> bool:
    if filters.taken_from is None and filters.taken_to is None:
        return True
    if not isinstance(taken_ts, int | float):
        return False
    after = filters.taken_from is None or taken_ts >= wall_clock_ts(filters.taken_from)
    return after and (filters.taken_to is None or taken_ts < wall_clock_ts(filters.taken_to))


def _at_place(place: str | None, metadata: Mapping[str, Any]) -> bool:
    if not place:
        return True
    names = set(place_names(place))
    return any(metadata.get(key) in names for key in METADATA_KEYS.values())


def without_time(filters: QueryFilters) -> QueryFilters:
    """The same filters with the time range dropped."""
    return QueryFilters(place=filters.place)


def without_place(filters: QueryFilters) -> QueryFilters:
    """The same filters with the place dropped."""
    return QueryFilters(taken_from=filters.taken_from, taken_to=filters.taken_to)


def has_time(filters: QueryFilters | None) -> bool:
    """True when the filters restrict the time taken."""
    return filters is not None and (filters.taken_from, filters.taken_to) != (None, None)


def has_place(filters: QueryFilters | None) -> bool:
    """True when the filters restrict the place."""
    return filters is not None and bool(filters.place)


def relaxations(filters: QueryFilters | None) -> list[tuple[QueryFilters | None, str | None]]:
    """The filters to try in turn, each with the note to show when it is the one used.

    The full filters first; with both a time and a place, the place alone, then the time alone;
    finally no filter at all.
    """
    if filters is None:
        return [(None, None)]
    where = f"在{filters.place}拍的" if filters.place else ""
    steps: list[tuple[QueryFilters | None, str | None]] = [(filters, None)]
    if has_time(filters) and has_place(filters):
        steps.append((without_time(filters), f"没有找到该时间{where}照片，已忽略时间条件"))
        steps.append((without_place(filters), f"没有找到该时间{where}照片，已忽略地点条件"))
        steps.append((None, f"没有找到该时间{where}照片，已忽略时间和地点条件"))
    elif has_time(filters):
        steps.append((None, "没有找到该时间的照片，已忽略时间条件"))
    else:
        steps.append((None, f"没有找到{where}照片，已忽略地点条件"))
    return steps
