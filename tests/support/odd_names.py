"""A library whose file names are not all valid UTF-8, as Chinese Windows zips and Samba leave."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

GBK_NAME = "海边拍照.jpg".encode("gbk")  # not valid UTF-8
LATIN1_NAME = "café.jpg".encode("latin-1")  # b"caf\xe9.jpg"
# What people are shown for each file (paths relative to the library).
SHOWN = {
    "blue": "相册/海边拍照.jpg",  # a GBK name inside a UTF-8 folder
    "red": "caf\\xe9.jpg",  # not GBK either: escaped
    "green": "草地.jpg",
}


def make_odd_names_library(root: Path) -> Path:
    """Three photos of plain colours under `root` (created with bytes paths); returns root."""
    folder = os.fsencode(root)
    os.makedirs(os.path.join(folder, "相册".encode()), exist_ok=True)
    _save(os.path.join(folder, "相册".encode(), GBK_NAME), (40, 90, 220))
    _save(os.path.join(folder, LATIN1_NAME), (210, 30, 30))
    _save(os.path.join(folder, "草地.jpg".encode()), (40, 170, 60))
    return root


def _save(path: bytes, rgb: tuple[int, int, int]) -> None:
    with open(path, "wb") as handle:
        Image.new("RGB", (320, 240), rgb).save(handle, "JPEG", quality=90)
