"""Fixtures for the core: the real m3e-small model, a small real library from ../shared/eval."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from config import Settings, load_settings
from index.search.embed import SentenceTransformerEmbedder

REPO = Path(__file__).resolve().parents[2]
EVAL_DIR = Path(os.environ.get("PEITU_EVAL_DIR", REPO.parent / "shared" / "eval"))


def m3e_small_path() -> Path:
    """The offline m3e-small folder (scripts/fetch_m3e_small.sh puts it in models/)."""
    path = Path(os.environ.get("PEITU_TEST_EMBEDDING_MODEL", REPO / "models" / "m3e-small"))
    if not (path / "config.json").is_file():
        pytest.fail(f"m3e-small not found at {path}: run scripts/fetch_m3e_small.sh")
    return path


@pytest.fixture(scope="session")
def m3e_path() -> Path:
    return m3e_small_path()


@pytest.fixture(scope="session")
def embedder(m3e_path: Path) -> SentenceTransformerEmbedder:
    """One loaded model for the whole session (loading takes seconds)."""
    model = SentenceTransformerEmbedder(str(m3e_path))
    model.load()
    return model


@dataclass(frozen=True)
class EvalPhoto:
    rel_path: str  # relative to the library root
    captions: list[str]


@dataclass(frozen=True)
class SmallLibrary:
    root: Path
    descriptions: Path  # sidecar JSONL: captions 1-4 joined
    photos: list[EvalPhoto]


def read_eval_captions(limit: int | None = None) -> list[EvalPhoto]:
    """Photos of ../shared/eval with five Chinese captions, in file order."""
    captions_file = EVAL_DIR / "captions.jsonl"
    if not captions_file.is_file():
        pytest.fail(f"evaluation data not found at {EVAL_DIR} (expected ../shared/eval)")
    photos: list[EvalPhoto] = []
    with captions_file.open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if len(record.get("captions_zh", [])) == 5:
                photos.append(EvalPhoto(Path(record["image"]).name, record["captions_zh"]))
            if limit is not None and len(photos) == limit:
                break
    return photos


def build_small_library(root: Path, count: int = 30) -> SmallLibrary:
    """Copy `count` eval photos into root/photos with a descriptions file beside it."""
    photos = read_eval_captions(count)
    library = root / "photos"
    library.mkdir(parents=True, exist_ok=True)
    lines = []
    for photo in photos:
        shutil.copyfile(EVAL_DIR / "images" / photo.rel_path, library / photo.rel_path)
        description = "".join(photo.captions[:4])
        lines.append(
            json.dumps({"image": photo.rel_path, "description": description}, ensure_ascii=False)
        )
    descriptions = root / "descriptions.jsonl"
    descriptions.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return SmallLibrary(library, descriptions, photos)


@pytest.fixture
def small_library(tmp_path: Path) -> SmallLibrary:
    return build_small_library(tmp_path / "lib")


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(tmp_path: Path, m3e_path: Path) -> SettingsFactory:
    """Settings for a test: data in tmp_path, m3e-small, rerank off unless asked."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "embedding": {"model": str(m3e_path)},
            "rerank": {"enabled": False},
        }
        values.update(overrides)
        return load_settings(**values)

    return make
