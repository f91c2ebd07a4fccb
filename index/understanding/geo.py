"""GPS position → Chinese province / city / district, offline, and place names for the query side.

Backed by GeoToolCN (PyPI `geotool-cn`), which ships China's administrative boundaries
(34 provinces, 363 cities, 2874 districts; DataV.GeoAtlas, converted to WGS-84) in its wheel and
reads them from a memory-mapped file: no network, no native dependency. Photos' EXIF GPS is
WGS-84, so positions are looked up as they are.

Names come in two forms: the official full name ("大理白族自治州", "杭州市") and the short name
people write ("大理", "杭州"), which `short_name` derives by removing the administrative suffix
and, for autonomous areas, the names of the peoples ("白族").
"""

from __future__ import annotations

import logging
import re
import threading
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import GeoToolCN

from index.prebuilt import cached_table, file_key, source_key

log = logging.getLogger(__name__)

Level = Literal["province", "city", "district"]
LEVELS: tuple[Level, ...] = ("province", "city", "district")
METADATA_KEYS: dict[Level, str] = {
    "province": "place_province",
    "city": "place_city",
    "district": "place_district",
}

# Peoples named in autonomous regions, prefectures, counties and banners (as the names write
# them, some without 族), longest first so that "土家" wins over "土".
_PEOPLES = "维吾尔|柯尔克孜|哈萨克|达斡尔|鄂伦春|鄂温克|塔吉克|土家|朝鲜|布依|哈尼|景颇|傈僳|蒙古|仫佬|毛南"
_PEOPLES += "|仡佬|纳西|拉祜|布朗|独龙|普米|裕固|东乡|保安|撒拉|锡伯|壮|回|苗|黎|藏|羌|彝|侗|傣|白|满|畲|瑶|水"
_PEOPLES += "|佤|怒|土|各"
_AUTONOMOUS = re.compile(
    r"^(?P<base>.{2,}?)(?:(?:" + _PEOPLES + r")族?)+自治(?:区|州|县|旗)(?:直辖)?$"
)
_SUFFIXES: tuple[str, ...] = ("特别行政区", "自治区", "自治州", "自治县", "自治旗", "地区", "林区")
_SUFFIXES += ("新区", "省", "市", "区", "县", "盟", "旗")


def short_name(full: str) -> str:
    """The name people write: "大理白族自治州" → "大理", "杭州市" → "杭州", "城区" → "城区".

    A name whose stem would be a single character keeps its full form.
    """
    found = _AUTONOMOUS.match(full)
    if found:
        return found.group("base")
    for suffix in _SUFFIXES:
        stem = full.removesuffix(suffix)
        if stem != full:
            return stem.removesuffix("族") if len(stem) >= 2 else full
    return full


@dataclass(frozen=True)
class Place:
    """Where a photo was taken, as official full names; a level may be unknown."""

    province: str | None = None
    city: str | None = None
    district: str | None = None

    def label(self) -> str:
        """ "云南省大理白族自治州大理市"; a municipality is named once ("上海市黄浦区")."""
        parts: list[str] = []
        for name in (self.province, self.city, self.district):
            if name and name not in parts:
                parts.append(name)
        return "".join(parts)

    def metadata(self) -> dict[str, str]:
        """The vector store's metadata fields (place_province, place_city, place_district)."""
        names = (self.province, self.city, self.district)
        return {
            METADATA_KEYS[level]: name for level, name in zip(LEVELS, names, strict=True) if name
        }


@dataclass(frozen=True)
class KnownName:
    """A name a text may use for a place, and the official names it stands for."""

    alias: str
    level: Level  # the highest level the alias names
    full_names: tuple[str, ...]
    is_full: bool  # the alias is an official name itself ("杭州市"), not a short one


class Gazetteer:
    """China's administrative divisions: reverse geocoding and the names a text may use.

    The names come from a table kept in the cache folder (`index.prebuilt`): a query with a
    place word reads it in milliseconds, where opening GeoToolCN's data indexes every division
    (~0.4 CPU-s). GeoToolCN itself is opened on the first position looked up."""

    def __init__(self, tool: GeoToolCN.GeoTool | None = None) -> None:
        self._given = tool
        self._tool_lock = threading.Lock()
        regions = _regions(tool) if tool is not None else _cached_regions()
        self._names = _known_names((level, name) for level, name in regions)

    @property
    def _tool(self) -> GeoToolCN.GeoTool:
        with self._tool_lock:
            if self._given is None:
                self._given = GeoToolCN.GeoTool()
            return self._given

    def place_at(self, lat: float, lon: float) -> Place | None:
        """The divisions containing a WGS-84 position, or None outside China."""
        found = self._tool.reverse(lat, lon)
        place = Place(
            province=found.province.name if found.province else None,
            city=found.city.name if found.city else None,
            district=found.district.name if found.district else None,
        )
        return place if place.province else None

    def known_names(self) -> dict[str, KnownName]:
        """Every alias (short and full names of two characters or more) → what it names."""
        return self._names

    def full_names(self, name: str) -> tuple[str, ...]:
        """Official names a name stands for; () when it names no division."""
        known = self._names.get(name)
        return known.full_names if known else ()


def _regions(tool: GeoToolCN.GeoTool) -> list[tuple[Level, str]]:
    return [(level, region.name) for level in LEVELS for region in tool.list_regions(level)]


def _cached_regions() -> list[tuple[Level, str]]:
    """Every division's (level, official name), from the cache folder's table of them."""
    data = Path(GeoToolCN.__file__).with_name("data")
    key = source_key(GeoToolCN.__version__, *(file_key(f) for f in sorted(data.glob("*.gtc"))))
    return cached_table("placenames", key, lambda: _regions(GeoToolCN.GeoTool()))


def _known_names(regions: Iterable[tuple[Level, str]]) -> dict[str, KnownName]:
    """A province's name stands for provinces only ("海南" is the province, not 海南藏族自治州);
    other names stand for every city and district of that name ("朝阳" → 朝阳市, 朝阳区)."""
    by_alias: dict[str, dict[Level, set[str]]] = defaultdict(lambda: defaultdict(set))
    full: set[str] = set()
    for level, name in regions:
        full.add(name)
        for alias in {name, short_name(name)}:
            if len(alias) >= 2:
                by_alias[alias][level].add(name)
    return {alias: _known(alias, levels, alias in full) for alias, levels in by_alias.items()}


def _known(alias: str, levels: dict[Level, set[str]], is_full: bool) -> KnownName:
    if "province" in levels:
        return KnownName(alias, "province", tuple(sorted(levels["province"])), is_full)
    names = sorted(levels.get("city", set()) | levels.get("district", set()))
    level: Level = "city" if "city" in levels else "district"
    return KnownName(alias, level, tuple(names), is_full)


_default: Gazetteer | None = None
_default_lock = threading.Lock()


def default_gazetteer() -> Gazetteer:
    """The shared gazetteer over GeoToolCN's bundled data, loaded once (its names from the
    cache folder: a few ms; the boundaries on the first position looked up)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Gazetteer()
            log.debug("gazetteer loaded: %d names", len(_default.known_names()))
        return _default


def place_at(lat: float | None, lon: float | None) -> Place | None:
    """The place of a GPS position with the shared gazetteer; None without GPS or outside China."""
    if lat is None or lon is None:
        return None
    return default_gazetteer().place_at(lat, lon)
