"""Describers register once, by name and tier: the CLI's choices, the API's accepted names,
the tier of their descriptions and the composition root's builders all come from there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from cli.main import build_parser
from config import Settings
from index import wiring
from index.errors import ModelUnavailable
from index.library.descriptions import (
    DescriberKind,
    DescriptionRow,
    describer_choices,
    describer_of,
    forget_describer,
    known_tier,
    register_describer,
    should_describe,
    tier_of,
)
from index.models import PhotoFile
from server.schemas import JobIn


class ChineseClip:
    """A stand-in for a new local describer (a Chinese-CLIP, say)."""

    key = "cnclip-v1"

    def describe(self, photo: PhotoFile, data: bytes | None = None) -> str:
        return "海边的狗"

    def describe_bytes(self, data: bytes) -> str:
        return "海边的狗"


@pytest.fixture
def cnclip() -> Iterator[DescriberKind]:
    kind = register_describer(
        DescriberKind("cnclip", "vision", lambda key: key.startswith("cnclip"))
    )
    try:
        yield kind
    finally:
        forget_describer("cnclip")


def _row(key: str, created: str) -> DescriptionRow:
    return DescriptionRow("p", key, f"text of {key}", created)


def test_an_unknown_describers_key_is_not_guessed_as_a_vision_models() -> None:
    assert describer_of("cnclip-v1") is None and known_tier("cnclip-v1") is None
    assert tier_of("cnclip-v1") == "offline"
    # ranked lowest: it keeps no known describer out, and a known one replaces it
    assert should_describe([_row("cnclip-v1", "2026-01-01")], "offline@v3")
    assert describer_of("qwen-vl-plus@v1") is not None  # a vision model's key: "model@version"
    assert [kind.name for kind in map(describer_of, ("qwen-vl-plus@v1", "offline@v3"))] == [
        "vision",
        "offline",
    ]


def test_a_registered_describer_gets_its_declared_tier(cnclip: DescriberKind) -> None:
    assert tier_of("cnclip-v1") == known_tier("cnclip-v1") == "vision"
    assert describer_of("cnclip-v1") is cnclip
    assert describer_of("cnclip@v2") is cnclip  # its own keys beat the vision model's form
    assert not should_describe([_row("cnclip-v1", "2026-01-01")], "offline@v3")


def test_a_registered_describer_is_a_cli_choice(cnclip: DescriberKind) -> None:
    args = build_parser().parse_args(["index", "--describer", "cnclip"])
    assert args.describer == "cnclip"
    forget_describer("cnclip")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["index", "--describer", "cnclip"])


def test_the_api_accepts_the_registered_names_only(cnclip: DescriberKind) -> None:
    assert JobIn.model_validate({"describer": "cnclip"}).describer == "cnclip"
    schema = JobIn.model_json_schema()["properties"]["describer"]
    assert ["auto", "vision", "offline", "cnclip"] in [o.get("enum") for o in schema["anyOf"]]
    with pytest.raises(ValidationError, match="must be one of auto, vision, offline, cnclip"):
        JobIn.model_validate({"describer": "clip"})


def test_the_composition_root_builds_every_describer_by_its_name(
    cnclip: DescriberKind, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert set(describer_choices()) - {"auto", "cnclip"} == set(wiring.DESCRIBER_BUILDERS)
    settings = Settings(data_dir=tmp_path)
    with pytest.raises(ModelUnavailable, match="no describer named 'cnclip'"):
        wiring.make_describer(settings, "cnclip")
    clip = ChineseClip()
    monkeypatch.setitem(wiring.DESCRIBER_BUILDERS, "cnclip", lambda _settings: clip)
    assert wiring.make_describer(settings, "cnclip") is clip
