"""`ApiClient`: a PeiTu server's `/api` over HTTP, for the bot and the CLI alike.

Answers come back as the core's records (`RecommendResult`, ...), error answers as the core's
exceptions (`client/answers.py`), so an edge replies the same whether it asks the core in its own
process or a server. Blocking and thread-safe: call it in a thread, like the core.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, BinaryIO

import httpx

from client.answers import (
    Caller,
    ServerStatus,
    ServerUnavailable,
    ServerUnreachable,
    error_for,
    result_from_json,
    status_from_json,
)
from index.models import RecommendResult

CONNECT_TIMEOUT_S = 5.0
ANSWER_TIMEOUT_S = 120.0  # an answer may wait on the LLM reranker and its retries


class ApiClient:
    """Asks the server at `url` with the admin `token` (a bearer token; none when None)."""

    def __init__(
        self,
        url: str,
        token: str | None,
        caller: Caller,
        *,
        timeout_s: float = ANSWER_TIMEOUT_S,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.caller = caller
        self._client = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"} if token else {},
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            transport=transport,
            trust_env=False,  # the user's own server: never through an HTTP(S)_PROXY
        )

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._client.close()

    def recommend(self, text: str, top_k: int | None, **options: Any) -> RecommendResult:
        """`POST /api/recommend` (`options`: rerank, time_place, closest); raises what the core
        would (`InvalidQuery`, ...)."""
        body = {"text": text, "top_k": top_k, **options}
        return result_from_json(self.call("POST", "/api/recommend", json=body))

    def similar_to_image(self, data: bytes, top_k: int | None = None) -> RecommendResult:
        """`POST /api/search/similar` with the image as an upload."""
        files = {"file": ("image", data, "application/octet-stream")}
        params = {"top_k": top_k} if top_k is not None else None
        return result_from_json(
            self.call("POST", "/api/search/similar", files=files, params=params)
        )

    def status(self) -> ServerStatus:
        """`GET /api/status`: photos findable, last index run, whether one runs, any problem."""
        return status_from_json(self.call("GET", "/api/status"))

    def check_reachable(self, timeout_s: float) -> None:
        """Raise `ServerUnreachable` when nothing answers `GET /healthz` (any answer will do)."""
        try:
            self._client.get("/healthz", timeout=timeout_s)
        except httpx.HTTPError as error:
            raise self._unreachable(error) from error

    def call(self, method: str, path: str, **request: Any) -> dict[str, Any]:
        """The JSON object the server answers; its error answer as an exception (`error_for`)."""
        try:
            response = self._client.request(method, path, **request)
        except httpx.HTTPError as error:
            raise self._unreachable(error) from error
        answer = _json_object(response)
        if response.status_code != 200:
            raise self._error(response.status_code, answer, path)
        if not answer and response.content.strip() != b"{}":
            raise ServerUnavailable(
                f"{self.url}{path} answered without a JSON object: is "
                f"{self.caller.url_setting} a PeiTu server?"
            )
        return answer

    def download(self, path: str, out: BinaryIO) -> bool:
        """Stream a file's bytes into `out`; False when the server says 404."""
        try:
            with self._client.stream("GET", path) as response:
                if response.status_code == 404:
                    return False
                if response.status_code != 200:
                    response.read()
                    raise self._error(response.status_code, _json_object(response), path)
                for chunk in response.iter_bytes():
                    out.write(chunk)
            return True
        except httpx.HTTPError as error:
            raise self._unreachable(error) from error

    def _error(self, status: int, answer: dict[str, Any], path: str) -> Exception:
        return error_for(status, answer, self.caller, self.url, path)

    def _unreachable(self, error: httpx.HTTPError) -> ServerUnreachable:
        return ServerUnreachable(f"{self.url}: {str(error) or type(error).__name__}")


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}
