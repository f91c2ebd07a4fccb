"""A describer that reads descriptions a user already has from a JSONL file.

Each line: {"image": "<path relative to the library>", "description": "..."}. Used to import
existing captions and for evaluation; it makes no model call.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path, PurePosixPath

from index.errors import DescribeFailed, PeiTuError
from index.models import PhotoFile


class SidecarFileInvalid(PeiTuError):
    """The descriptions file is missing or has a malformed line."""


class SidecarDescriber:
    """Looks photos up by relative path, falling back to a unique file-name match."""

    def __init__(self, path: Path) -> None:
        self._by_path = _read_jsonl(path)
        self._by_name = _unique_names(self._by_path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        self._key = f"sidecar:{digest}"

    @property
    def key(self) -> str:
        return self._key

    def describe(self, photo: PhotoFile, data: bytes | None = None) -> str:
        """The description written for the photo's path (its content plays no part)."""
        rel = PurePosixPath(photo.rel_path).as_posix()
        text = self._by_path.get(rel) or self._by_name.get(PurePosixPath(rel).name)
        if not text:
            raise DescribeFailed(f"{photo.rel_path}: no description in the descriptions file")
        return text

    def describe_bytes(self, data: bytes) -> str:
        raise DescribeFailed(
            "a descriptions file cannot describe a new image; configure a vision model"
        )


def _read_jsonl(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise SidecarFileInvalid(f"descriptions file not found: {path}")
    out: dict[str, str] = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                image, text = _parse_line(line, path, number)
                out[image] = text
    return out


def _parse_line(line: str, path: Path, number: int) -> tuple[str, str]:
    try:
        record = json.loads(line)
        image = PurePosixPath(str(record["image"]).replace("\\", "/")).as_posix()
        text = str(record["description"]).strip()
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise SidecarFileInvalid(
            f'{path}:{number}: expected {{"image": ..., "description": ...}} ({error})'
        ) from None
    return image.removeprefix("./"), text


def _unique_names(by_path: dict[str, str]) -> dict[str, str]:
    names: dict[str, list[str]] = defaultdict(list)
    for rel, text in by_path.items():
        names[PurePosixPath(rel).name].append(text)
    return {name: texts[0] for name, texts in names.items() if len(texts) == 1}
