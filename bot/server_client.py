"""The bot's `PhotoFinder` over HTTP: a PeiTu server answers, the bot holds no index and no model.

With `PEITU_BOT__SERVER_URL` set, one process (`peitu serve`) owns the catalog, the Chroma index
and the embedding model; the bot asks its `/api` (through `client.ApiClient`, the CLI's client
too) the same questions it would ask the core and gets the same answers and the core's own
exceptions, so every reply stays the same. The photo files it sends (`GET /api/photos/{id}` and
`/file`) are kept in a small cache folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from client import ApiClient, Caller, NotFound, ServerRefused, ServerStatus, ServerUnavailable
from index.library.pairing import Pairing
from index.models import RecommendResult

__all__ = ["ServerFinder", "ServerRefused", "ServerUnavailable"]  # what bot/main.py catches

_CACHED_PHOTOS = 200  # downloaded originals kept for the next reply that sends them again
_BOT = Caller(
    server="the server",
    token="the bot's token",
    url_setting="PEITU_BOT__SERVER_URL",
    token_setting="PEITU_BOT__SERVER_TOKEN or PEITU_ADMIN_TOKEN",
)


class ServerFinder:
    """`bot.ports.PhotoFinder` answered by a PeiTu server. Blocking, thread-safe: call it in a
    thread, like the core."""

    def __init__(self, base_url: str, token: str | None, *, timeout_s: float = 120.0) -> None:
        self._api = ApiClient(base_url, token, _BOT, timeout_s=timeout_s)
        self.base_url = self._api.url
        self._cache = Path(tempfile.mkdtemp(prefix="peitu-bot-photos-"))

    def recommend(
        self, text: str, top_k: int | None = None, *, rerank: bool = True
    ) -> RecommendResult:
        """`POST /api/recommend`; raises what the core would (`InvalidQuery`, ...)."""
        return self._api.recommend(text, top_k, rerank=rerank)

    def similar_to_image(self, data: bytes, top_k: int | None = None) -> RecommendResult:
        """`POST /api/search/similar` with the image as an upload."""
        return self._api.similar_to_image(data, top_k)

    def status(self) -> ServerStatus:
        """`GET /api/status`: photos findable, last index run, whether one runs, any problem."""
        return self._api.status()

    def photo_path(self, photo_id: str) -> Path | None:
        """A local copy of the photo's original file, or None when it left the library."""
        folder = self._cache / photo_id
        cached = next(folder.iterdir(), None) if folder.is_dir() else None
        if cached is not None:  # a photo id is its content: a copy never goes stale
            return cached
        try:
            photo = self._api.call("GET", f"/api/photos/{photo_id}")
        except NotFound:
            return None
        name = PurePosixPath(str(photo.get("path", ""))).name or photo_id
        target = folder / name
        if not self._download(f"/api/photos/{photo_id}/file", target):
            return None
        self._forget_oldest()
        return target

    # --- `bot.ports.BotPairing`: the pairing kept in the server's data folder ------------------
    def code(self) -> str:
        """`GET /api/bot/pairing`: the code that lets the next person in."""
        return _text_field(self._api.call("GET", "/api/bot/pairing"), "code")

    def paired_ids(self) -> frozenset[str]:
        """`GET /api/bot/pairing`: the contact ids paired with the bot."""
        paired = self._api.call("GET", "/api/bot/pairing").get("paired") or []
        try:
            return frozenset(str(person["contact_id"]) for person in paired)
        except (KeyError, TypeError) as error:
            raise ServerUnavailable(f"unexpected pairing answer: {error!r}") from error

    def pair(self, code: str, contact_id: str, name: str) -> Pairing:
        """`POST /api/bot/pairing`: let the contact in when the code is right."""
        body = {"code": code[:20], "contact_id": contact_id, "name": name[:200]}
        answer = self._api.call("POST", "/api/bot/pairing", json=body)
        try:
            return Pairing(answer["outcome"])
        except (KeyError, ValueError) as error:
            raise ServerUnavailable(f"unexpected pairing answer: {answer!r}") from error

    def replace_code(self, why: str) -> str:
        """`POST /api/bot/pairing/new-code`: a new code now; the new one."""
        answer = self._api.call("POST", "/api/bot/pairing/new-code", json={"why": why[:200]})
        return _text_field(answer, "code")

    def close(self) -> None:
        """Close the connections and remove the downloaded copies."""
        self._api.close()
        shutil.rmtree(self._cache, ignore_errors=True)

    def _download(self, path: str, target: Path) -> bool:
        """Download a file into `target` (atomically); False when the server says 404."""
        # The part file waits beside the photo folders, so a folder only ever holds whole files.
        handle, part = tempfile.mkstemp(dir=self._cache, suffix=".part")
        try:
            with os.fdopen(handle, "wb") as out:
                if not self._api.download(path, out):
                    return False
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(part, target)
            return True
        finally:
            Path(part).unlink(missing_ok=True)

    def _forget_oldest(self) -> None:
        folders = sorted(
            (path for path in self._cache.iterdir() if path.is_dir()), key=_mtime, reverse=True
        )
        for old in folders[_CACHED_PHOTOS:]:
            shutil.rmtree(old, ignore_errors=True)


def _text_field(answer: dict[str, Any], name: str) -> str:
    value = answer.get(name)
    if not isinstance(value, str):
        raise ServerUnavailable(f"the server's answer has no {name!r}")
    return value


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # removed by another reply's clean-up meanwhile
        return 0.0
