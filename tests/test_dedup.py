"""Near-duplicates (a resized, recoloured, re-compressed copy) collapse into one result."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image, ImageEnhance

from index.library.dedup import (
    MAX_DISTANCE,
    collapse_near_duplicates,
    hash_distance,
    perceptual_hash,
)
from index.models import Candidate
from index.search.embed import SentenceTransformerEmbedder
from index.wiring import build_app
from tests.support.core_fixtures import SettingsFactory
from tests.support.made_photos import scene

MAX_PIXELS = 120_000_000


def _edited_copy(image: Image.Image) -> bytes:
    """60 % size, more saturated, a little brighter, saved again as JPEG quality 70."""
    small = image.resize((image.width * 6 // 10, image.height * 6 // 10), Image.Resampling.LANCZOS)
    recoloured = ImageEnhance.Brightness(ImageEnhance.Color(small).enhance(1.25)).enhance(1.08)
    out = io.BytesIO()
    recoloured.save(out, "JPEG", quality=70)
    return out.getvalue()


@pytest.fixture
def three_photos(tmp_path: Path) -> dict[str, Path]:
    """An original, its edited copy (another file, other bytes) and a different picture."""
    root = tmp_path / "photos"
    root.mkdir()
    paths = {name: root / f"{name}.jpg" for name in ("original", "copy", "other")}
    scene("sea").save(paths["original"], "JPEG", quality=92)
    paths["copy"].write_bytes(_edited_copy(scene("sea")))
    scene("hills").save(paths["other"], "JPEG", quality=92)
    return paths


def _candidate(name: str, path: Path, similarity: float) -> Candidate:
    return Candidate(
        name, f"{name}.jpg", similarity, "", {"phash": perceptual_hash(path, max_pixels=MAX_PIXELS)}
    )


def test_hashes_of_real_files(three_photos: dict[str, Path]) -> None:
    hashes = {
        name: perceptual_hash(path, max_pixels=MAX_PIXELS) for name, path in three_photos.items()
    }
    assert all(h is not None and len(h) == 16 for h in hashes.values())
    original, copy, other = hashes["original"], hashes["copy"], hashes["other"]
    assert original is not None and copy is not None and other is not None
    assert hash_distance(original, copy) <= MAX_DISTANCE
    assert hash_distance(original, other) > MAX_DISTANCE


def test_the_best_ranked_of_a_group_is_kept(three_photos: dict[str, Path]) -> None:
    candidates = [
        _candidate("copy", three_photos["copy"], 0.9),
        _candidate("other", three_photos["other"], 0.8),
        _candidate("original", three_photos["original"], 0.7),
    ]
    kept = collapse_near_duplicates(candidates)
    assert [c.photo_id for c in kept] == ["copy", "other"]


def test_photos_without_a_hash_are_kept(tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    assert perceptual_hash(broken, max_pixels=MAX_PIXELS) is None
    candidates = [
        Candidate("a", "a.jpg", 0.9, "", {}),
        Candidate("b", "b.jpg", 0.8, "", {"phash": "not-hex-at-all!!"}),
        Candidate("c", "c.jpg", 0.7, "", {"phash": None}),
    ]
    assert collapse_near_duplicates(candidates) == candidates


def test_heic_is_hashed_like_its_jpeg(tmp_path: Path) -> None:
    from tests.support.badfiles import encode

    (tmp_path / "a.jpg").write_bytes(encode(scene("sea"), "JPEG", quality=90))
    (tmp_path / "a.heic").write_bytes(encode(scene("sea"), "HEIF"))
    jpeg = perceptual_hash(tmp_path / "a.jpg", max_pixels=MAX_PIXELS)
    heic = perceptual_hash(tmp_path / "a.heic", max_pixels=MAX_PIXELS)
    assert jpeg is not None and heic is not None and hash_distance(jpeg, heic) <= MAX_DISTANCE


def test_recommend_returns_two_results_not_three(
    three_photos: dict[str, Path],
    tmp_path: Path,
    make_settings: SettingsFactory,
    embedder: SentenceTransformerEmbedder,
) -> None:
    """Index the three real files; all match the text, the copy collapses into the original."""
    text = "海边的日落，金色的太阳挂在蓝色的海面上"
    descriptions = tmp_path / "descriptions.jsonl"
    lines = [json.dumps({"image": f"{name}.jpg", "description": text}) for name in three_photos]
    descriptions.write_text("\n".join(lines) + "\n", encoding="utf-8")
    root = three_photos["original"].parent
    app = build_app(make_settings(library=root), descriptions=descriptions, embedder=embedder)
    app.index()
    assert app.store.count() == 3  # three distinct files, three vectors
    result = app.recommend(text, rerank=False)
    paths = [r.path for r in result.results]
    assert len(paths) == 2 and "other.jpg" in paths
    assert len({"original.jpg", "copy.jpg"} & set(paths)) == 1
