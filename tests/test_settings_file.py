"""`load_settings` reads a TOML file without touching the process environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from config import SettingsInvalid, load_settings


def _toml(tmp_path: Path, name: str, top_k: int) -> Path:
    path = tmp_path / name
    path.write_text(f'top_k_initial = {top_k}\n[vision]\nmodel = "from-{name}"\n', encoding="utf-8")
    return path


def test_a_config_file_loads_and_leaves_the_environment_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PEITU_CONFIG", raising=False)
    monkeypatch.delenv("PEITU_TOP_K_INITIAL", raising=False)
    monkeypatch.delenv("PEITU_VISION__MODEL", raising=False)
    before = dict(os.environ)
    settings = load_settings(_toml(tmp_path, "a.toml", 7))
    assert dict(os.environ) == before
    assert (settings.top_k_initial, settings.vision.model) == (7, "from-a.toml")
    # the next load without a file no longer sees the first file
    assert load_settings().top_k_initial != 7


def test_peitu_config_from_the_environment_still_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PEITU_TOP_K_INITIAL", raising=False)
    monkeypatch.setenv("PEITU_CONFIG", str(_toml(tmp_path, "env.toml", 9)))
    assert load_settings().top_k_initial == 9
    # an explicit file wins over PEITU_CONFIG
    assert load_settings(_toml(tmp_path, "given.toml", 5)).vision.model == "from-given.toml"
    assert os.environ["PEITU_CONFIG"] == str(tmp_path / "env.toml")


def test_environment_variables_win_over_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PEITU_TOP_K_INITIAL", "11")
    assert load_settings(_toml(tmp_path, "b.toml", 3)).top_k_initial == 11


def test_a_missing_file_is_refused_with_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SettingsInvalid, match="config file not found"):
        load_settings(tmp_path / "nope.toml")
    monkeypatch.setenv("PEITU_CONFIG", str(tmp_path / "gone.toml"))
    with pytest.raises(SettingsInvalid, match=r"gone\.toml \(from PEITU_CONFIG\)"):
        load_settings()
