"""`peitu recommend` through a running PeiTu server (`PEITU_SERVER__URL`): no model loaded here.

The server's answer to `POST /api/recommend` is read back into the core's `RecommendResult` by
the one client of the API (`client.ApiClient`, the bot's too), so `--json` prints exactly what a
search here prints. A server that does not answer at all (nothing listens there, or it does not
accept the connection in `CONNECT_TIMEOUT_S`) is `ServerUnreachable`: the command then searches
on its own. A server that answers with an error is that error, not a fallback.
"""

from __future__ import annotations

from client import ApiClient, Caller

CONNECT_TIMEOUT_S = 2.0
PROBE_TIMEOUT_S = 5.0  # `/healthz` answers at once on a server that works


def remote_recommender(url: str, token: str | None) -> ApiClient:
    """The client that asks the server at `url` with the admin token; one per command."""
    caller = Caller(
        server=f"the PeiTu server {url}",
        token="the token",
        url_setting="PEITU_SERVER__URL",
        token_setting="PEITU_ADMIN_TOKEN",
    )
    return ApiClient(url, token, caller, connect_timeout_s=CONNECT_TIMEOUT_S)
