"""Tables derived from a package's data files (jieba's dictionary, the gazetteer's place names),
kept in the user's cache folder so that a process reads them in one piece instead of building
them from the source: a cold query pays a read, not a parse.

A table is written once by the first process that needs it (aside, then moved into place, so a
reader never sees half a file) and is known by a key saying which source it was built from (a
package version, a file's size and time): a new source gets a new file. A cache folder that
cannot be written to is no error; the table is then built in memory each time.
"""

from __future__ import annotations

import contextlib
import logging
import marshal
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from config import user_cache_dir

log = logging.getLogger(__name__)

_T = TypeVar("_T")
FORMAT = 1  # bump when a table's layout changes


def cache_folder() -> Path:
    """The user's cache folder (`config.user_cache_dir`: `$XDG_CACHE_HOME/peitu`, else
    `~/.cache/peitu`), which the embedding model's exports share."""
    return user_cache_dir()


def source_key(*parts: object) -> str:
    """A file-name-safe key for a table's source: its parts joined (versions, sizes, times)."""
    text = "-".join(str(part) for part in (FORMAT, *parts))
    return "".join(ch if ch.isalnum() or ch in ".-_" else "_" for ch in text)


def file_key(path: Path) -> str:
    """A data file's size and modification time (a reinstalled package has a new time)."""
    facts = path.stat()
    return f"{facts.st_size}-{facts.st_mtime_ns}"


def cached_table(name: str, key: str, build: Callable[[], _T], folder: Path | None = None) -> _T:
    """The table `build` makes (plain dicts, lists, tuples, str and numbers only: it is kept with
    `marshal`), read from `<folder>/<name>-<key>.marshal` when there, else built and kept there.
    `name` has no "-" (older tables of the same name are removed by it)."""
    path = (folder or cache_folder()) / f"{name}-{key}.marshal"
    found = _read(path)
    if found is not None:
        return found  # type: ignore[no-any-return]
    table = build()
    data = marshal.dumps(table)  # type: ignore[arg-type]  # _T: one of marshal's types
    _keep(path, lambda partial: partial.write_bytes(data))
    return table


def cached_file(
    name: str, key: str, suffix: str, build: Callable[[Path], None], folder: Path | None = None
) -> Path | None:
    """`<folder>/<name>-<key><suffix>`, made by `build(path)` when it is not there yet (into a
    partial file, then moved into place); None when it cannot be kept (a read-only folder)."""
    path = (folder or cache_folder()) / f"{name}-{key}{suffix}"
    if path.is_file():
        return path
    log.info("building %s in the cache folder (once)", path.name)
    return path if _keep(path, build) else None


def _read(path: Path) -> Any | None:
    try:
        data = path.read_bytes()  # in one piece: marshal.load on the file reads it in small ones
    except OSError:
        return None
    try:
        return marshal.loads(data)
    except (EOFError, ValueError, TypeError):
        log.warning("the cached table %s is unreadable; building it again", path)
        return None


def _keep(path: Path, write: Callable[[Path], object]) -> bool:
    """Write `path` through a partial file beside it; False (and nothing kept) on an OSError.
    Another error of `write` goes up, and no partial file stays behind either way."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(partial)
        os.replace(partial, path)
    except OSError as error:
        log.info(
            "cannot keep %s in the cache folder (%s); it is built again next time", path, error
        )
        return False
    finally:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)  # gone already after the replace
    _remove_older(path)
    return True


def _remove_older(path: Path) -> None:
    """The same table of an older source, and partial files a killed writer left."""
    name, suffix = path.name.split("-", 1)[0], "".join(path.suffixes[-1:])
    stale = [*path.parent.glob(f"{name}-*{suffix}"), *path.parent.glob(f".{name}-*")]
    for older in stale:
        if older != path and not _being_written(older):
            older.unlink(missing_ok=True)


def _being_written(path: Path) -> bool:
    """A partial file younger than ten minutes may be another process's write in progress."""
    try:
        return path.name.startswith(".") and time.time() - path.stat().st_mtime < 600
    except OSError:
        return False
