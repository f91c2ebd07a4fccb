"""`peitu recommend` through a running PeiTu server (`PEITU_SERVER__URL`): no model loaded here.

The server answers `POST /api/recommend` with exactly what `peitu recommend --json` prints, so
its JSON is printed as it comes. A server that does not answer at all (nothing listens there,
or it does not accept the connection in `CONNECT_TIMEOUT_S`) is `ServerUnreachable`: the command
then searches on its own. A server that answers with an error is that error, not a fallback.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import httpx

from index.errors import InvalidQuery, PeiTuError

CONNECT_TIMEOUT_S = 2.0
PROBE_TIMEOUT_S = 5.0  # `/healthz` answers at once on a server that works
ANSWER_TIMEOUT_S = 120.0  # an answer may wait on the LLM reranker and its retries


class ServerError(PeiTuError):
    """The server answered, but not with photos: a refused token, an error, not a PeiTu server.
    Unlike a text the server refused (`InvalidQuery`), it ends a `--batch` run too."""


class ServerUnreachable(ServerError):
    """Nothing answered at the server's address."""


class RemoteRecommender:
    """Asks `POST {url}/api/recommend` with the admin token; one instance per command."""

    def __init__(
        self, url: str, token: str | None, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.url = url
        self._client = httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {token}"} if token else {},
            timeout=httpx.Timeout(ANSWER_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
            transport=transport,
            trust_env=False,  # the user's own server: never through an HTTP(S)_PROXY
        )

    def __enter__(self) -> RemoteRecommender:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._client.close()

    def check_reachable(self) -> None:
        """Raise `ServerUnreachable` when nothing answers `GET /healthz` (any answer will do)."""
        try:
            self._client.get("/healthz", timeout=PROBE_TIMEOUT_S)
        except httpx.HTTPError as error:
            raise ServerUnreachable(f"{self.url}: {_reason(error)}") from error

    def recommend(self, text: str, top_k: int | None, **options: Any) -> dict[str, Any]:
        """The server's answer: the JSON object `peitu recommend --json` prints."""
        body = {"text": text, "top_k": top_k, **options}
        try:
            response = self._client.post("/api/recommend", json=body)
        except httpx.HTTPError as error:
            raise ServerError(f"the PeiTu server {self.url}: {_reason(error)}") from error
        answer = _json_object(response)
        if response.status_code == 200 and "results" in answer:
            return answer
        raise _error_for(response.status_code, answer, self.url)


def _reason(error: httpx.HTTPError) -> str:
    return str(error) or type(error).__name__


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _detail(detail: object) -> str:
    """FastAPI's `detail`: a string, or (a request it refused, 422) a list of errors."""
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        first = detail[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        return f"{where}: {first.get('msg', '')}" if where else str(first.get("msg", ""))
    return str(detail or "")


def _error_for(status: int, answer: dict[str, Any], url: str) -> PeiTuError:
    """The server's error answer (see server/errors.py) as the command's one line."""
    detail = _detail(answer.get("detail")) or f"HTTP {status}"
    if status in (400, 422):  # a text refused as it is (blank, too long)
        return InvalidQuery(detail)
    if status in (401, 403):
        return ServerError(
            f"the PeiTu server {url} refused the token ({status}: {detail}): set "
            "PEITU_ADMIN_TOKEN to the server's one"
        )
    if status == 404:
        return ServerError(f"{url} has no /api/recommend: is PEITU_SERVER__URL a PeiTu server?")
    if status == 200:
        return ServerError(f"{url} answered without photos: is PEITU_SERVER__URL a PeiTu server?")
    return ServerError(f"the PeiTu server {url} answered {status}: {detail}")
