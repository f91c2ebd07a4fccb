"""Putting an uploaded photo into the library: a new file under `uploads/`, never over another.

The server checks that the bytes are a photo and picks a safe name (`server.uploads`); the core
writes the file here and lets the photo back into the index (`PeiTu.accept_upload`).
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

UPLOADS_FOLDER = "uploads"  # below the library root


def save_new_file(folder: Path, name: str, data: bytes) -> Path:
    """Write `data` to `folder/name`, or `name-1`, `name-2`, ... if taken; never overwrites.

    The bytes go to a hidden temporary file first and are linked into place in one step, so
    the library scanner never sees half a photo.
    """
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f".upload-{uuid.uuid4().hex}.part"
    with temporary.open("xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    try:
        for target in _candidate_paths(folder, name):
            if _claim(target, temporary, data):
                log.info("saved upload as %s", target)
                return target
    finally:
        temporary.unlink(missing_ok=True)
    raise FileExistsError(f"no free name for {name} in {folder}")


def _candidate_paths(folder: Path, name: str) -> list[Path]:
    stem, _, extension = name.rpartition(".")
    paths = [folder / name] + [folder / f"{stem}-{n}.{extension}" for n in range(1, 1000)]
    if any(path.parent != folder for path in paths):  # impossible after `safe_file_name`
        raise ValueError(f"unsafe upload name {name!r}")
    return paths


def _claim(target: Path, temporary: Path, data: bytes) -> bool:
    """Put the photo at `target` unless something is there; False when the name is taken."""
    try:
        os.link(temporary, target)  # atomic, and fails if the name exists
        return True
    except FileExistsError:
        return False
    except OSError:  # a filesystem without hard links: exclusive create, then write
        pass
    try:
        with target.open("xb") as handle:
            handle.write(data)
    except FileExistsError:
        return False
    return True
