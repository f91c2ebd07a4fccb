"""Who may use the bot, how often, and the images people sent recently. No wechaty types here."""

from __future__ import annotations

import time
import unicodedata
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

Clock = Callable[[], float]
_T = TypeVar("_T")
_KEPT_CONTROLS = frozenset("\n\t\u200d")  # line breaks, tabs, the emoji joiner
EVERYONE = "*"  # the key of the limit shared by all


def strip_controls(text: str) -> str:
    """`text` without NUL, bidi overrides and isolates, zero-width and other control or format
    characters (Unicode Cc, Cf, Cs, Co): nothing the bot echoes can reorder or hide a reply."""
    return "".join(
        char
        for char in text
        if char in _KEPT_CONTROLS or unicodedata.category(char) not in ("Cc", "Cf", "Cs", "Co")
    )


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    retry_after_s: float = 0.0
    notify: bool = True  # False for a repeated refusal: tell a person once, not every time


class RateLimiter:
    """At most `per_minute` requests per key in any sliding minute; 0 means no limit."""

    def __init__(self, per_minute: int, clock: Clock = time.monotonic, window_s: float = 60.0):
        self.per_minute = per_minute
        self._clock = clock
        self._window_s = window_s
        self._hits: dict[str, deque[float]] = {}
        self._told: set[str] = set()

    def check(self, key: str) -> RateDecision:
        """Count one request for `key` if it is within the limit; say when it may try again."""
        if self.per_minute <= 0:
            return RateDecision(True)
        now = self._clock()
        hits = self._recent_hits(key, now)
        if len(hits) < self.per_minute:
            hits.append(now)
            self._told.discard(key)
            return RateDecision(True)
        first_refusal = key not in self._told
        self._told.add(key)
        return RateDecision(False, hits[0] + self._window_s - now, notify=first_refusal)

    def _recent_hits(self, key: str, now: float) -> deque[float]:
        if len(self._hits) > 10_000:  # many one-off users: forget the idle ones
            self._forget_idle(now)
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self._window_s:
            hits.popleft()
        return hits

    def _forget_idle(self, now: float) -> None:
        idle = [k for k, hits in self._hits.items() if not hits or hits[-1] <= now - self._window_s]
        for key in idle:
            del self._hits[key]
            self._told.discard(key)


@dataclass(frozen=True)
class AllowList:
    """Contacts and rooms the bot serves, by id or by name/topic (empty lists serve nobody:
    `bot.access` adds the paired people, or everyone when asked).

    A message is served when its sender is a listed contact, or when it comes from a listed
    room. So `contacts=["me"]` alone keeps the bot (and the photos) out of every room a
    stranger might add it to, and `rooms=["Family"]` alone serves only that room.
    With `by_name=False` only ids count: anyone can rename themselves or a room they are in.
    """

    contacts: frozenset[str] = frozenset()
    rooms: frozenset[str] = frozenset()
    by_name: bool = True

    @classmethod
    def of(cls, contacts: Iterable[str], rooms: Iterable[str], by_name: bool = True) -> AllowList:
        """An allow-list from the configured names/ids (blank entries ignored)."""
        return cls(_clean(contacts), _clean(rooms), by_name)

    def allows(
        self,
        talker_id: str,
        talker_name: str,
        room_id: str | None = None,
        room_topic: str | None = None,
    ) -> bool:
        """True when the sender is listed, or the room is (None: a 1:1 chat)."""
        talker = {talker_id, talker_name} if self.by_name else {talker_id}
        if talker & self.contacts:
            return True
        if room_id is None:
            return False
        room = {room_id, room_topic or ""} if self.by_name else {room_id}
        return bool(room & self.rooms)


def _clean(names: Iterable[str]) -> frozenset[str]:
    return frozenset(name.strip() for name in names if name.strip())


class RecentItems(Generic[_T]):
    """The last item per key (e.g. the last image a person sent), forgotten after `ttl_s`."""

    def __init__(self, ttl_s: float, clock: Clock = time.monotonic, max_keys: int = 1000):
        self.ttl_s = ttl_s
        self._clock = clock
        self._max_keys = max_keys
        self._items: OrderedDict[str, tuple[float, _T]] = OrderedDict()

    def put(self, key: str, item: _T) -> None:
        """Remember `item` as the latest for `key`, dropping the oldest key when full."""
        self._items.pop(key, None)
        self._items[key] = (self._clock(), item)
        while len(self._items) > self._max_keys:
            self._items.popitem(last=False)

    def get(self, key: str) -> _T | None:
        """The latest item for `key` if it is younger than `ttl_s`, else None."""
        entry = self._items.get(key)
        if entry is None:
            return None
        stored_at, item = entry
        if self._clock() - stored_at > self.ttl_s:
            del self._items[key]
            return None
        return item
