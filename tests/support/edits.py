"""Edited copies of a photo, as a person makes them before posting: the issue's test edit."""

from __future__ import annotations

import io

from PIL import Image, ImageEnhance, ImageOps


def edited_copy(data: bytes) -> bytes:
    """Centre crop to 80 % of each side, shrink to 60 %, 10 % brighter, JPEG quality 55."""
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    width, height = image.size
    left, top = round(width * 0.1), round(height * 0.1)
    cropped = image.crop((left, top, width - left, height - top))
    small = cropped.resize(
        (round(cropped.width * 0.6), round(cropped.height * 0.6)), Image.Resampling.LANCZOS
    )
    brighter = ImageEnhance.Brightness(small).enhance(1.1)
    out = io.BytesIO()
    brighter.save(out, "JPEG", quality=55)
    return out.getvalue()


def burst_neighbour(data: bytes, shift: float) -> bytes:
    """The next frame of a burst: the view moved right by `shift` of the width, same size."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    width, height = image.size
    moved = image.crop((round(width * shift), 0, width, height)).resize((width, height))
    out = io.BytesIO()
    moved.save(out, "JPEG", quality=90)
    return out.getvalue()
