"""GPS → province/city/district offline, on photos whose EXIF the test writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from index.library.imaging import probe_image
from index.understanding.geo import Place, default_gazetteer, place_at, short_name
from tests.support.badfiles import encode, exif_with_time_and_place, noise_image

DALI = (25.6065, 100.2676)
HANGZHOU = (30.2741, 120.1551)
SHANGHAI = (31.2304, 121.4737)  # People's Square
TOKYO = (35.6812, 139.7671)


def _photo_with_gps(path: Path, lat: float, lon: float, fmt: str = "JPEG") -> Path:
    path.write_bytes(encode(noise_image(64, 48), fmt, exif=exif_with_time_and_place(lat, lon)))
    return path


@pytest.mark.parametrize(
    ("position", "expected"),
    [
        (DALI, Place("云南省", "大理白族自治州", "大理市")),
        (HANGZHOU, Place("浙江省", "杭州市", "拱墅区")),
        (SHANGHAI, Place("上海市", "上海市", "黄浦区")),
    ],
    ids=["dali", "hangzhou", "shanghai"],
)
def test_exif_gps_of_a_written_photo_names_its_place(
    tmp_path: Path, position: tuple[float, float], expected: Place
) -> None:
    photo = _photo_with_gps(tmp_path / "photo.jpg", *position)
    info = probe_image(photo, max_pixels=10_000_000)
    assert info.gps_lat == pytest.approx(position[0], abs=1e-4)
    assert place_at(info.gps_lat, info.gps_lon) == expected


def test_heic_gps_is_read_and_named(tmp_path: Path) -> None:
    photo = _photo_with_gps(tmp_path / "phone.heic", *DALI, fmt="HEIF")
    info = probe_image(photo, max_pixels=10_000_000)
    place = place_at(info.gps_lat, info.gps_lon)
    assert place is not None and place.city == "大理白族自治州"


def test_no_place_outside_china_or_without_gps() -> None:
    assert place_at(*TOKYO) is None
    assert place_at(None, None) is None
    assert place_at(DALI[0], None) is None


def test_place_label_and_metadata_name_a_municipality_once() -> None:
    shanghai = Place("上海市", "上海市", "黄浦区")
    assert shanghai.label() == "上海市黄浦区"
    assert shanghai.metadata() == {
        "place_province": "上海市",
        "place_city": "上海市",
        "place_district": "黄浦区",
    }
    assert Place("云南省", None, None).metadata() == {"place_province": "云南省"}


@pytest.mark.parametrize(
    ("full", "short"),
    [
        ("大理白族自治州", "大理"),
        ("黔东南苗族侗族自治州", "黔东南"),
        ("湘西土家族苗族自治州", "湘西"),
        ("内蒙古自治区", "内蒙古"),
        ("广西壮族自治区", "广西"),
        ("香港特别行政区", "香港"),
        ("杭州市", "杭州"),
        ("浦东新区", "浦东"),
        ("东乡族自治县", "东乡"),
        ("芒市", "芒市"),  # a one-character stem keeps the full name
        ("城区", "城区"),
    ],
)
def test_short_names(full: str, short: str) -> None:
    assert short_name(full) == short


def test_names_a_text_may_use() -> None:
    gazetteer = default_gazetteer()
    assert gazetteer.full_names("大理") == ("大理市", "大理白族自治州")
    assert gazetteer.full_names("杭州市") == ("杭州市",)
    # A province's name means the province, not 海南藏族自治州 in Qinghai.
    assert gazetteer.full_names("海南") == ("海南省",)
    assert gazetteer.full_names("海边") == ()
    names = gazetteer.known_names()
    assert names["西湖"].level == "district" and not names["西湖"].is_full
    assert all(len(alias) >= 2 for alias in names)


def test_every_bundled_division_is_named_once_per_level() -> None:
    gazetteer = default_gazetteer()
    for alias in ("北京", "天津", "上海", "重庆", "拉萨", "乌鲁木齐", "哈尔滨", "三亚"):
        assert gazetteer.full_names(alias), alias
    # The bundled data covers all 34 provincial divisions.
    provinces = {k.full_names for k in gazetteer.known_names().values() if k.level == "province"}
    assert len({name for names in provinces for name in names}) == 34


def test_geo_lookup_is_offline() -> None:
    """The dataset ships in the wheel: looking up needs no network and no download."""
    import GeoToolCN

    data = Path(GeoToolCN.__file__).parent / "data" / "china.full.gtc"
    assert data.is_file() and data.stat().st_size > 1_000_000
    assert place_at(*HANGZHOU) is not None
