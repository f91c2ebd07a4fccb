"""Which description of a photo counts: tiers of describers, best first.

Every describer registers here once, by name and tier (`register_describer`): the CLI's
`--describer` choices, the API's accepted names and the tier of a stored key come from that.
A photo can have several descriptions, one per describer key (a captions file, a vision model
at a prompt version, the offline describer). They are ranked by tier: the user's own imported
captions over a vision model's description over an offline one. Within a tier the newest wins
(a new vision model or prompt version replaces the old one). A description written by
`peitu index --redescribe` supersedes the photo's others, whatever their tier, until a run
writes a better-tier one for a describer that has not described the photo yet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

Tier = Literal["imported", "vision", "offline"]
TIERS: tuple[Tier, ...] = ("imported", "vision", "offline")  # best first
_RANK: dict[Tier, int] = {"offline": 0, "vision": 1, "imported": 2}
SIDECAR_PREFIX = "sidecar:"
OFFLINE_PREFIX = "offline"
UNKNOWN_TIER: Tier = "offline"  # a key no describer claims ranks lowest: it keeps nothing out


@dataclass(frozen=True)
class DescriberKind:
    """A describer as the rest of PeiTu knows it: its name (`peitu index --describer`, the
    API's `describer`), the tier of its descriptions, and which stored keys are its own."""

    name: str
    tier: Tier
    owns: Callable[[str], bool]  # True for a describer key this describer writes
    choosable: bool = True  # offered by name (the sidecar is chosen by its file instead)


_KINDS: dict[str, DescriberKind] = {}


def register_describer(kind: DescriberKind) -> DescriberKind:
    """Make a describer known by name and tier. A later one wins for the keys both claim
    (the vision model claims every "model@version", so a new describer's own keys beat it)."""
    _KINDS[kind.name] = kind
    return kind


def forget_describer(name: str) -> None:
    """Make a describer unknown again (one a test registered)."""
    _KINDS.pop(name, None)


def describer_choices() -> tuple[str, ...]:
    """What a job may ask for by name: "auto" (the server's own choice) and each describer."""
    return ("auto", *(kind.name for kind in _KINDS.values() if kind.choosable))


def describer_of(describer_key: str) -> DescriberKind | None:
    """The describer that writes this key, or None when no known one does."""
    for kind in reversed(_KINDS.values()):
        if kind.owns(describer_key):
            return kind
    return None


def known_tier(describer_key: str) -> Tier | None:
    """The tier its describer registered, or None when no known describer writes the key."""
    kind = describer_of(describer_key)
    return kind.tier if kind is not None else None


def tier_of(describer_key: str) -> Tier:
    """The tier its describer registered; a key no describer claims ranks lowest (never
    guessed as a vision model's)."""
    return known_tier(describer_key) or UNKNOWN_TIER


def _is_model_at_version(key: str) -> bool:
    model, at, version = key.rpartition("@")
    return bool(model and at and version)


register_describer(DescriberKind("vision", "vision", _is_model_at_version))  # "qwen-vl-plus@v1"
register_describer(DescriberKind("offline", "offline", lambda key: key.startswith(OFFLINE_PREFIX)))
register_describer(
    DescriberKind("sidecar", "imported", lambda key: key.startswith(SIDECAR_PREFIX), False)
)


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
