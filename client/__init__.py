"""The one client of a PeiTu server's HTTP API, used by the bot and the CLI.

It imports the core's records and errors only: no `bot`, `server`, `cli`, nor an edge framework
(tests/test_import_rules.py, rule 8).
"""

from client.answers import (
    Caller,
    NotFound,
    ServerRefused,
    ServerStatus,
    ServerUnavailable,
    ServerUnreachable,
    error_for,
    result_from_json,
)
from client.api import ApiClient

__all__ = [
    "ApiClient",
    "Caller",
    "NotFound",
    "ServerRefused",
    "ServerStatus",
    "ServerUnavailable",
    "ServerUnreachable",
    "error_for",
    "result_from_json",
]
