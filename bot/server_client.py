"""The bot's `PhotoFinder` over HTTP: a PeiTu server answers, the bot holds no index and no model.

With `PEITU_BOT__SERVER_URL` set, one process (`peitu serve`) owns the catalog, the Chroma index
and the embedding model; the bot asks its `/api` the same questions it would ask the core and
gets the same answers: `POST /api/recommend`, `POST /api/search/similar`, `GET /api/status`, and
the photo files it sends (`GET /api/photos/{id}` and `/file`, kept in a small cache folder).
The server's error answers become the core's own exceptions again, so every reply stays the same.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

import httpx

from client.answers import (
    PhotoGone,
    ServerRefused,
    ServerStatus,
    ServerUnavailable,
    error_for,
    result_from_json,
)
from index.library.pairing import Pairing
from index.models import RecommendResult

__all__ = ["ServerFinder", "ServerRefused", "ServerUnavailable"]  # what bot/main.py catches

log = logging.getLogger(__name__)

_CONNECT_TIMEOUT_S = 5.0
_CACHED_PHOTOS = 200  # downloaded originals kept for the next reply that sends them again


class ServerFinder:
    """`bot.ports.PhotoFinder` answered by a PeiTu server. Blocking, thread-safe: call it in a
    thread, like the core."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        timeout_s: float = 120.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=_CONNECT_TIMEOUT_S),
            transport=transport,
            trust_env=False,  # the server is next door: never through an HTTP(S)_PROXY
        )
        self._cache = Path(tempfile.mkdtemp(prefix="peitu-bot-photos-"))

    def recommend(
        self, text: str, top_k: int | None = None, *, rerank: bool = True
    ) -> RecommendResult:
        """`POST /api/recommend`; raises what the core would (`InvalidQuery`, ...)."""
        body = {"text": text, "top_k": top_k, "rerank": rerank}
        return result_from_json(self._call("POST", "/api/recommend", json=body))

    def similar_to_image(self, data: bytes, top_k: int | None = None) -> RecommendResult:
        """`POST /api/search/similar` with the image as an upload."""
        files = {"file": ("image", data, "application/octet-stream")}
        params = {"top_k": top_k} if top_k is not None else None
        return result_from_json(
            self._call("POST", "/api/search/similar", files=files, params=params)
        )

    def status(self) -> ServerStatus:
        """`GET /api/status`: photos findable, last index run, whether one runs, any problem."""
        answer = self._call("GET", "/api/status")
        try:
            last = answer["last_index_at"]
            return ServerStatus(
                photos=int(answer["photos"]),
                last_index_at=datetime.fromisoformat(last) if last else None,
                indexing=bool(answer["indexing"]),
                problem=answer["problem"],
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ServerUnavailable(f"unexpected /api/status answer: {error!r}") from error

    def photo_path(self, photo_id: str) -> Path | None:
        """A local copy of the photo's original file, or None when it left the library."""
        folder = self._cache / photo_id
        cached = next(folder.iterdir(), None) if folder.is_dir() else None
        if cached is not None:  # a photo id is its content: a copy never goes stale
            return cached
        try:
            photo = self._call("GET", f"/api/photos/{photo_id}")
        except PhotoGone:
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
        return _text_field(self._call("GET", "/api/bot/pairing"), "code")

    def paired_ids(self) -> frozenset[str]:
        """`GET /api/bot/pairing`: the contact ids paired with the bot."""
        paired = self._call("GET", "/api/bot/pairing").get("paired") or []
        try:
            return frozenset(str(person["contact_id"]) for person in paired)
        except (KeyError, TypeError) as error:
            raise ServerUnavailable(f"unexpected pairing answer: {error!r}") from error

    def pair(self, code: str, contact_id: str, name: str) -> Pairing:
        """`POST /api/bot/pairing`: let the contact in when the code is right."""
        body = {"code": code[:20], "contact_id": contact_id, "name": name[:200]}
        answer = self._call("POST", "/api/bot/pairing", json=body)
        try:
            return Pairing(answer["outcome"])
        except (KeyError, ValueError) as error:
            raise ServerUnavailable(f"unexpected pairing answer: {answer!r}") from error

    def replace_code(self, why: str) -> str:
        """`POST /api/bot/pairing/new-code`: a new code now; the new one."""
        answer = self._call("POST", "/api/bot/pairing/new-code", json={"why": why[:200]})
        return _text_field(answer, "code")

    def close(self) -> None:
        """Close the connections and remove the downloaded copies."""
        self._client.close()
        shutil.rmtree(self._cache, ignore_errors=True)

    def _call(self, method: str, path: str, **request: Any) -> dict[str, Any]:
        try:
            response = self._client.request(method, path, **request)
        except httpx.HTTPError as error:
            raise ServerUnavailable(f"PeiTu server {self.base_url}: {error!r}") from error
        if response.status_code != 200:
            raise error_for(response.status_code, _json_or_empty(response))
        answer = _json_or_empty(response)
        if not answer and response.content.strip() != b"{}":
            raise ServerUnavailable(f"{method} {path}: the answer is not a JSON object")
        return answer

    def _download(self, path: str, target: Path) -> bool:
        """Stream a file into `target` (atomically); False when the server says 404."""
        # The part file waits beside the photo folders, so a folder only ever holds whole files.
        handle, part = tempfile.mkstemp(dir=self._cache, suffix=".part")
        try:
            with os.fdopen(handle, "wb") as out, self._client.stream("GET", path) as response:
                if response.status_code == 404:
                    return False
                if response.status_code != 200:
                    response.read()
                    raise error_for(response.status_code, _json_or_empty(response))
                for chunk in response.iter_bytes():
                    out.write(chunk)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(part, target)
            return True
        except httpx.HTTPError as error:
            raise ServerUnavailable(f"PeiTu server {self.base_url}: {error!r}") from error
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


def _json_or_empty(response: httpx.Response) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}
