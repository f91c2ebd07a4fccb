"""Harness for the browser tests: Debian's Chromium, driven by the Python playwright package.

Chromium comes from Debian (`scripts/setup_browser.sh`) and is launched through
`executable_path`; playwright never downloads a browser here. The server side comes from
`start_server` in tests/server/conftest.py.
"""

from __future__ import annotations

import os
import struct
import zlib

import pytest

CHROMIUM = os.environ.get("PEITU_TEST_CHROMIUM", "/usr/bin/chromium")
# --headless is added by playwright; it also gives every launch a fresh, empty --user-data-dir.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def missing_browser(reason: str) -> None:
    """Fail in CI (a missing browser is a broken setup there), skip on a developer's machine."""
    message = f"{reason}: run scripts/setup_browser.sh"
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(message)
    pytest.skip(message)


def require_browser_tooling() -> None:
    if not os.access(CHROMIUM, os.X_OK):
        missing_browser(f"Chromium not found at {CHROMIUM}")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing_browser("the playwright package is not installed")


def make_png(width: int = 64, height: int = 48, rgb: tuple[int, int, int] = (200, 80, 40)) -> bytes:
    """A valid, solid-colour RGB PNG built by hand (no imaging library needed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + bytes(rgb) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )
