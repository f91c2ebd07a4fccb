"""File names that are not valid UTF-8, as Python hands them over and as people read them.

On Linux a file name is bytes. Python decodes it with `os.fsdecode` (UTF-8, surrogateescape):
a name written by Chinese Windows (GBK, as zips and Samba shares often keep it) or in Latin-1
arrives as a `str` holding lone surrogates (`caf\\udce9.jpg`). That `str` is the lossless form:
`os.fsencode` gives the exact bytes back, and `open()` and `Path` accept it, so the core keeps
it as it is. It cannot be encoded as UTF-8, though, so SQLite, Chroma, JSON and the terminal
get `readable_path(...)` instead, and the catalog stores the raw bytes (see `index.library.catalog`).
"""

from __future__ import annotations

import os

# Tried in order on each path segment that is not UTF-8. GBK covers the Chinese Windows code
# page (cp936); anything else is shown with \xNN escapes for the bytes that do not decode.
_DISPLAY_ENCODINGS = ("gbk",)


def is_lossless_text(text: str) -> bool:
    """True when `text` encodes as UTF-8 (it holds no surrogate-escaped bytes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def readable_path(text: str) -> str:
    """`text` as valid UTF-8 for people: segments decoded as GBK when they are, else escaped.

    "海边拍照.jpg" stored in GBK reads "海边拍照.jpg"; Latin-1 "café.jpg" reads "caf\\xe9.jpg".
    Valid UTF-8 text is returned unchanged. Works on any text holding paths (an error message).
    """
    if is_lossless_text(text):
        return text
    return "/".join(_readable_segment(segment) for segment in text.split("/"))


def _readable_segment(segment: str) -> str:
    if is_lossless_text(segment):
        return segment
    raw = os.fsencode(segment)
    for encoding in _DISPLAY_ENCODINGS:
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return raw.decode("utf-8", errors="backslashreplace")
