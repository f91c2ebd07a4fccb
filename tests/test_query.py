"""Social text → time/place filters + semantic words, and the filters through the real pipeline."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from index.models import QueryFilters
from index.search.embed import SentenceTransformerEmbedder
from index.service import PeiTu
from index.understanding.filters import matches, relaxations, wall_clock_ts
from index.understanding.query import RuleBasedUnderstanding
from index.wiring import build_app
from tests.support.core_fixtures import SettingsFactory
from tests.support.made_photos import DALI, HANGZHOU, MadePhoto, write_photo

NOW = datetime(2026, 11, 23, 10, 30)  # a Monday
understand = RuleBasedUnderstanding(now=lambda: NOW)


def _range(text: str) -> tuple[str, str] | None:
    filters = understand.parse(text).filters
    if filters is None or filters.taken_from is None or filters.taken_to is None:
        return None
    return f"{filters.taken_from:%Y-%m-%d}", f"{filters.taken_to:%Y-%m-%d}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("今天的晚霞", ("2026-11-23", "2026-11-24")),
        ("昨天吃火锅", ("2026-11-22", "2026-11-23")),
        ("昨晚的月亮", ("2026-11-22", "2026-11-23")),
        ("前天", ("2026-11-21", "2026-11-22")),
        ("这周好忙", ("2026-11-23", "2026-11-30")),
        ("上周末去爬山", ("2026-11-21", "2026-11-23")),
        ("上周五加班", ("2026-11-20", "2026-11-21")),
        ("周末的咖啡", ("2026-11-21", "2026-11-23")),
        ("上个月", ("2026-10-01", "2026-11-01")),
        ("这个月", ("2026-11-01", "2026-12-01")),
        ("去年夏天", ("2025-06-01", "2025-09-01")),
        ("今年春天的花", ("2026-03-01", "2026-06-01")),
        ("去年冬天", ("2025-12-01", "2026-03-01")),
        ("24年夏天", ("2024-06-01", "2024-09-01")),
        ("国庆假期", ("2026-10-01", "2026-10-08")),
        ("去年国庆", ("2025-10-01", "2025-10-08")),
        ("元旦", ("2026-01-01", "2026-01-04")),
        ("春节回家", ("2026-01-20", "2026-02-27")),  # documented approximation
        ("2024年5月", ("2024-05-01", "2024-06-01")),
        ("5月1日", ("2026-05-01", "2026-05-02")),
        ("十二月的雪", ("2025-12-01", "2026-01-01")),  # the latest December that has begun
        ("去年", ("2025-01-01", "2026-01-01")),
        ("2023年", ("2023-01-01", "2024-01-01")),
    ],
)
def test_time_words_become_a_range_relative_to_the_clock(
    text: str, expected: tuple[str, str]
) -> None:
    assert _range(text) == expected


@pytest.mark.parametrize(
    "text", ["目前天气很好", "10年前的照片", "夏天的海边", "三个月没见", "蓝天白云"]
)
def test_words_that_are_no_time_filter(text: str) -> None:
    assert _range(text) is None


@pytest.mark.parametrize(
    ("text", "place", "semantic"),
    [
        ("去年夏天在大理，蓝天白云", "大理", "蓝天白云"),
        ("今天和朋友去了杭州西湖边喝茶", "杭州", "朋友 西湖边喝茶"),
        ("杭州的秋天真美", "杭州", "秋天真美"),
        ("成都街头的火锅店", "成都", "街头的火锅店"),
        ("在云南省旅行", "云南省", "旅行"),
        ("去了西湖", "西湖", ""),  # a district's short name counts after a movement word
        ("周末在上海外滩", "上海", "外滩"),
        ("我们在内蒙古草原", "内蒙古", "我们 草原"),
        ("在黄山上看日出", "黄山", "上看日出"),  # a city's name: 上 after it is no position
        ("去石柱玩了三天", "石柱", "玩了三天"),
    ],
)
def test_place_names_become_a_place_filter(text: str, place: str, semantic: str) -> None:
    parsed = understand.parse(text)
    assert parsed.filters is not None and parsed.filters.place == place
    assert parsed.semantic_text == semantic
    assert f"地点：{place}" in parsed.notes


@pytest.mark.parametrize(
    "text",
    [
        "海边的日落",  # scenery, not a division
        "山上的雪",
        "蓝天白云",  # 白云 is a district of Guangzhou, but only after 在/去...
        "大理石地板",  # 大理 followed by another word
        "吃兰州拉面",
        "三明治早餐",  # 三明 is a city and an everyday word
        "岁岁安康",
        "在郊区散步",  # 郊区 is an official name and an ordinary word
        "坐在石柱上的女人",  # 石柱 is a county, but here something to sit on (Flickr8k caption)
        "躺在白云下面",
    ],
)
def test_words_that_are_no_place_filter(text: str) -> None:
    parsed = understand.parse(text)
    assert parsed.filters is None or parsed.filters.place is None
    assert parsed.semantic_text == text


def test_semantic_text_and_notes() -> None:
    parsed = understand.parse("去年夏天在大理，蓝天白云")
    assert parsed.notes == ("时间：去年夏天（2025-06-01 至 2025-08-31）", "地点：大理")
    assert understand.parse("上周末的火锅").semantic_text == "火锅"
    assert understand.parse("蓝天白云").filters is None


def test_the_clock_is_injected() -> None:
    later = RuleBasedUnderstanding(now=lambda: datetime(2030, 2, 1))
    filters = later.parse("去年夏天").filters
    assert filters is not None and filters.taken_from == datetime(2029, 6, 1)


# --- filters --------------------------------------------------------------------------------
SUMMER_2025 = QueryFilters(datetime(2025, 6, 1), datetime(2025, 9, 1), None)


def _meta(taken: datetime | None, city: str | None = None) -> dict[str, object]:
    meta: dict[str, object] = {"taken_ts": wall_clock_ts(taken)} if taken else {}
    return meta | ({"place_city": city} if city else {})


def test_time_range_is_inclusive_start_exclusive_end() -> None:
    assert matches(SUMMER_2025, _meta(datetime(2025, 6, 1, 0, 0)))
    assert matches(SUMMER_2025, _meta(datetime(2025, 8, 31, 23, 59, 59)))
    assert not matches(SUMMER_2025, _meta(datetime(2025, 9, 1, 0, 0)))
    assert not matches(SUMMER_2025, _meta(None))  # no EXIF time: not in any range


def test_place_matches_any_level_by_official_name() -> None:
    dali = QueryFilters(place="大理")
    assert matches(dali, _meta(None, "大理白族自治州"))
    assert matches(dali, {"place_district": "大理市"})
    assert not matches(dali, _meta(None, "杭州市"))
    assert not matches(dali, {})


def test_relaxations() -> None:
    both = QueryFilters(datetime(2025, 6, 1), datetime(2025, 9, 1), "大理")
    steps = relaxations(both)
    assert [s[0] for s in steps] == [
        both,
        QueryFilters(place="大理"),
        QueryFilters(datetime(2025, 6, 1), datetime(2025, 9, 1)),
        None,
    ]
    assert steps[1][1] is not None and "已忽略时间条件" in steps[1][1]


# --- end to end -----------------------------------------------------------------------------
LIBRARY = [
    MadePhoto(
        "2025/dali_summer.jpg", "洱海边的蓝天白云，湖水清澈", datetime(2025, 7, 14, 15), DALI, 1
    ),
    MadePhoto(
        "2025/dali_winter.jpg", "洱海边的蓝天白云，冬日的古城", datetime(2025, 1, 12, 11), DALI, 2
    ),
    MadePhoto(
        "2025/hangzhou.jpg", "西湖边的蓝天白云，荷花盛开", datetime(2025, 7, 20, 9), HANGZHOU, 3
    ),
    MadePhoto(
        "2024/dali_old.jpg", "洱海边的蓝天白云，骑行环海", datetime(2024, 7, 10, 16), DALI, 4
    ),
    MadePhoto("misc/no_exif.jpg", "蓝天白云下的草地", None, None, 5),
]


@pytest.fixture
def dated_app(
    tmp_path: Path, make_settings: SettingsFactory, embedder: SentenceTransformerEmbedder
) -> PeiTu:
    root = tmp_path / "photos"
    for photo in LIBRARY:
        write_photo(root, photo)
    lines = [json.dumps({"image": p.rel_path, "description": p.description}) for p in LIBRARY]
    descriptions = tmp_path / "descriptions.jsonl"
    descriptions.write_text("\n".join(lines) + "\n", encoding="utf-8")
    settings = make_settings(library=root)
    app = build_app(settings, descriptions=descriptions, embedder=embedder, now=lambda: NOW)
    assert app.index().embedded == len(LIBRARY)
    return app


def _paths(app: PeiTu, text: str) -> set[str]:
    """The photos found with time/place words as a hard filter (`time_place="strict"`)."""
    return {r.path for r in app.recommend(text, rerank=False, time_place="strict").results}


def test_time_and_place_are_preferred_not_a_wall_by_default(dated_app: PeiTu) -> None:
    result = dated_app.recommend("去年夏天在大理，蓝天白云", rerank=False)
    paths = [r.path for r in result.results]
    assert paths[0] == "2025/dali_summer.jpg" and len(paths) == len(LIBRARY)
    assert result.time_place == "prefer"
    assert result.message is not None and "优先显示 去年夏天 在大理 的照片" in result.message
    assert "去年夏天 在大理" in result.results[0].reason
    assert "去年夏天" not in result.results[1].reason  # not of that time and place
    strict = dated_app.recommend("! 去年夏天在大理，蓝天白云", rerank=False)
    assert [r.path for r in strict.results] == ["2025/dali_summer.jpg"]
    assert strict.time_place == "strict"
    off = dated_app.recommend("~ 去年夏天在大理，蓝天白云", rerank=False)
    assert off.time_place == "off" and "优先显示" not in (off.message or "")


def test_last_summer_in_dali_finds_only_the_dali_summer_photo(dated_app: PeiTu) -> None:
    result = dated_app.recommend("去年夏天在大理", rerank=False)
    assert [r.path for r in result.results] == ["2025/dali_summer.jpg"]
    assert result.message is not None and "地点：大理" in result.message
    assert _paths(dated_app, "去年夏天在大理，蓝天白云") == {"2025/dali_summer.jpg"}


def test_time_alone_and_place_alone(dated_app: PeiTu) -> None:
    summer = {"2025/dali_summer.jpg", "2025/hangzhou.jpg"}
    assert _paths(dated_app, "去年夏天，蓝天白云") == summer
    dali = {"2025/dali_summer.jpg", "2025/dali_winter.jpg", "2024/dali_old.jpg"}
    assert _paths(dated_app, "在大理看蓝天白云") == dali
    assert _paths(dated_app, "蓝天白云") == {p.rel_path for p in LIBRARY}


def test_a_place_with_no_photos_is_ignored_with_a_note(dated_app: PeiTu) -> None:
    result = dated_app.recommend("去年夏天在成都，蓝天白云", rerank=False, time_place="strict")
    assert {r.path for r in result.results} == {"2025/dali_summer.jpg", "2025/hangzhou.jpg"}
    assert result.message is not None and "已忽略地点条件" in result.message


def test_a_time_with_no_photos_is_ignored_with_a_note(dated_app: PeiTu) -> None:
    result = dated_app.recommend("今天的蓝天白云", rerank=False, time_place="strict")
    assert len(result.results) == len(LIBRARY)
    assert result.message is not None and "没有找到该时间的照片，已忽略时间条件" in result.message


def test_filters_apply_in_the_vector_search_not_to_a_small_pool(
    tmp_path: Path, make_settings: SettingsFactory, embedder: SentenceTransformerEmbedder
) -> None:
    """Eight photos more similar to the words come first; the filter still finds the one photo."""
    crowd = [MadePhoto(f"crowd/{i}.jpg", "蓝天白云", None, None, 10 + i) for i in range(8)]
    target = MadePhoto("dali.jpg", "湖边散步", datetime(2025, 7, 1, 12), DALI, 99)
    root = tmp_path / "photos"
    for photo in [*crowd, target]:
        write_photo(root, photo)
    lines = [
        json.dumps({"image": p.rel_path, "description": p.description}) for p in [*crowd, target]
    ]
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    settings = make_settings(library=root, top_k_initial=3, top_k_final=3, similarity_threshold=0.0)
    app = build_app(settings, descriptions=tmp_path / "d.jsonl", embedder=embedder, now=lambda: NOW)
    app.index()
    assert "dali.jpg" not in _paths(app, "蓝天白云")
    # "?": the closest even though 湖边散步 does not fit 蓝天白云; the filter is what is tested
    assert _paths(app, "? 去年夏天在大理，蓝天白云") == {"dali.jpg"}
