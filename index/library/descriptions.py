"""Which description of a photo counts: tiers of describers, best first.

A photo can have several descriptions, one per describer key (a captions file, a vision model
at a prompt version, the offline describer). They are ranked by tier: the user's own imported
captions over a vision model's description over an offline one. Within a tier the newest wins
(a new vision model or prompt version replaces the old one). A description written by
`peitu index --redescribe` supersedes the photo's others, whatever their tier, until a run
writes a better-tier one for a describer that has not described the photo yet.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Tier = Literal["imported", "vision", "offline"]
TIERS: tuple[Tier, ...] = ("imported", "vision", "offline")  # best first
_RANK: dict[Tier, int] = {"offline": 0, "vision": 1, "imported": 2}
SIDECAR_PREFIX = "sidecar:"
OFFLINE_PREFIX = "offline"


def tier_of(describer_key: str) -> Tier:
    """The tier of a describer key: "sidecar:…" imported, "offline…" offline, else vision."""
    if describer_key.startswith(SIDECAR_PREFIX):
        return "imported"
    if describer_key.startswith(OFFLINE_PREFIX):
        return "offline"
    return "vision"


def tier_rank(tier: Tier) -> int:
    """Higher is better."""
    return _RANK[tier]


@dataclass(frozen=True)
class DescriptionRow:
    """One stored description with what ranking needs."""

    photo_id: str
    describer_key: str
    description: str
    created_at: str
    superseded: bool = False

    @property
    def tier(self) -> Tier:
        return tier_of(self.describer_key)


def best_of(rows: Iterable[DescriptionRow]) -> DescriptionRow | None:
    """The description that counts: not superseded first, then best tier, then newest."""
    ranked = sorted(
        enumerate(rows),
        key=lambda item: (
            not item[1].superseded,
            tier_rank(item[1].tier),
            item[1].created_at,
            item[0],
        ),
    )
    return ranked[-1][1] if ranked else None


def should_describe(existing: Iterable[DescriptionRow], describer_key: str) -> bool:
    """Whether an ordinary run with this describer describes the photo.

    Never again with the same key (model + prompt version), never when a better tier already
    describes it; a same-tier description by another key (a new model or prompt) is replaced."""
    rows = list(existing)
    if any(row.describer_key == describer_key for row in rows):
        return False
    best = best_of(rows)
    return best is None or tier_rank(tier_of(describer_key)) >= tier_rank(best.tier)
