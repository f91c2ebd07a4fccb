"""`python -m tests.support.temp_library WORK [SOURCE]`: the library `scripts/schemathesis.sh`
lets its server change, and the check that the server will use nothing else.

schemathesis's stateful phase uploads photos and deletes them with `delete_file=true`: pointed
at a real library it deletes real photos. So the script's server only ever sees a copy in its
temporary folder: made photos, or a copy of SOURCE (a library to test against, never touched).
`check` refuses, before the server starts, any library or data folder that settings resolve to
outside that folder or without the copy's marker.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from PIL import Image

MARKER = ".schemathesis-temp-copy"


def make_copy(work: Path, source: Path | None = None) -> Path:
    """`work/library`: a copy of `source` (files, not links), or four made photos; marked."""
    library = work / "library"
    if source is None:
        library.mkdir()
        for n, rgb in enumerate([(30, 90, 200), (40, 160, 60), (220, 220, 230), (200, 40, 30)]):
            Image.new("RGB", (320, 240), rgb).save(library / f"photo{n}.jpg", quality=90)
    else:
        shutil.copytree(source, library, symlinks=False)
    (library / MARKER).write_text("made by scripts/schemathesis.sh; deleted with it\n")
    return library


def check(work: Path, library: Path | None, data_dir: Path) -> str | None:
    """Why the server must not start on these folders, or None when both are the copy's."""
    root = work.resolve()
    if library is None or not library.resolve().is_relative_to(root):
        return f"refusing the library {library}: only a temporary copy under {root} may be used"
    if not (library / MARKER).is_file():
        return f"refusing the library {library}: it is not the script's temporary copy"
    if not data_dir.resolve().is_relative_to(root):
        return f"refusing the data folder {data_dir}: only one under {root} may be used"
    return None


def main(argv: list[str]) -> int:
    """`copy WORK [SOURCE]` makes the copy; `check WORK` checks what settings resolve to."""
    command, work = argv[0], Path(argv[1])
    if command == "copy":
        make_copy(work, Path(argv[2]) if len(argv) > 2 and argv[2] else None)
        return 0
    from config import load_settings

    settings = load_settings()
    problem = check(work, settings.library, settings.data_dir)
    if problem is not None:
        print(f"schemathesis.sh: {problem}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
