"""The web page's Chinese lines by status code (no auth: the page reads them before any token).

They are `server/messages.py`'s own, so the page shows the server's words for an answer that has
no `message` of its own (a proxy's error page) instead of keeping a copy.
"""

from __future__ import annotations

from fastapi import APIRouter

from server.messages import status_lines

router = APIRouter(tags=["page"])


@router.get("/messages.json", include_in_schema=False)
async def messages() -> dict[str, object]:
    """`{"by_status": {"404": "…"}, "internal": "…", "other": "…"}`."""
    return status_lines()
