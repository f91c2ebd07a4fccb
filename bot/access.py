"""Who the bot serves: a private bot unless told otherwise. No messenger's types here.

With no allow-list the bot serves only the people paired with it: its owner sends the pairing
code (shown in the bot's log, by `peitu doctor` and on the web page) in a private chat,
`/绑定 123456`, and is let in for good (`index.library.pairing`, kept in the data folder); a
code lets in one person. An allow-list (`PEITU_CHAT__ALLOW_CONTACTS` / `__ALLOW_ROOMS`) serves
those too, and rooms keep their rules: a listed room serves everyone in it, and an @-mention is
needed in rooms. `PEITU_CHAT__ALLOW_EVERYONE` opens the bot to all, on purpose. Anyone else
gets one polite line (once) and is logged by id, so the owner can list them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict

from bot.guards import AllowList, Clock
from bot.ports import BotPairing
from config.settings import ChatSettings
from index.errors import PeiTuError
from index.library.pairing import Pairing

log = logging.getLogger(__name__)

PAIRED_TTL_S = 10.0  # how long the paired people read from the store are trusted
_TOLD_KEPT = 10_000

STRANGER = (
    "你好！这个配图助手是私人的，只为它的主人和主人邀请的人服务。"
    "如果你是主人，请在私聊里发送「{prefix}绑定 配对码」（配对码在 peitu doctor、网页「运行检查」"
    "和机器人日志里）。"
)
PAIR_REPLIES = {
    Pairing.PAIRED: "绑定成功！现在可以用了：发送「{prefix}配图 文案」找配图，「{prefix}帮助」看全部用法。",
    Pairing.ALREADY: "你已经绑定过了，可以直接使用。",
    Pairing.WRONG: "配对码不对，请检查后再发（6 位数字，在 peitu doctor、网页「运行检查」和机器人日志里）。",
    Pairing.LOCKED: "配对码错误次数太多，暂时不能绑定；请主人换一个新的配对码后再试。",
}
PAIR_USAGE = "请在 {prefix}绑定 后面写上配对码，例如：{prefix}绑定 123456"
PAIR_IN_ROOM = "配对码请在私聊里发给我，不要发在群里。"
PAIR_SEEN_IN_ROOM = "这个配对码发在了群里，已经作废并换了新的；请在私聊里发送新的配对码。"
PAIR_OFF = "这个机器人按名单服务，没有开启绑定。"


class Access:
    """Decides whether a sender is served, and answers `/绑定`. The pairing store's calls
    block (a file, or the server over HTTP): they run in threads."""

    def __init__(
        self,
        settings: ChatSettings,
        pairing: BotPairing | None,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        self.everyone = settings.allow_everyone
        self._list = AllowList.of(
            settings.allow_contacts, settings.allow_rooms, by_name=settings.allow_names
        )
        self._pairing = pairing
        self._prefix = settings.command_prefix
        self._clock = clock
        self._paired: frozenset[str] = frozenset()
        self._paired_at = -math.inf
        self._told: OrderedDict[str, None] = OrderedDict()

    async def allows(
        self, talker_id: str, talker_name: str, room_id: str | None, room_topic: str | None
    ) -> bool:
        """True when the bot may answer this sender in this chat (room None: 1:1)."""
        if self.everyone or self._list.allows(talker_id, talker_name, room_id, room_topic):
            return True
        return talker_id in await self._paired_ids()

    def first_refusal(self, talker_id: str) -> bool:
        """Whether a stranger is refused for the first time (and so gets the polite line)."""
        if talker_id in self._told:
            return False
        self._told[talker_id] = None
        while len(self._told) > _TOLD_KEPT:
            self._told.popitem(last=False)
        return True

    def stranger_text(self) -> str:
        return STRANGER.format(prefix=self._prefix)

    async def pair(self, code: str, talker_id: str, talker_name: str, in_room: bool) -> str:
        """The reply to `/绑定 CODE`; in a room the code is refused (and replaced if right)."""
        pairing = self._pairing
        if pairing is None:
            return PAIR_OFF
        if not code:
            return PAIR_USAGE.format(prefix=self._prefix)
        if in_room:
            if code == await asyncio.to_thread(pairing.code):
                await asyncio.to_thread(pairing.replace_code, "the pairing code was sent in a room")
                return PAIR_SEEN_IN_ROOM
            return PAIR_IN_ROOM
        outcome = await asyncio.to_thread(pairing.pair, code, talker_id, talker_name)
        log.info("pairing from %r (id %s): %s", talker_name, talker_id, outcome)
        if outcome is Pairing.PAIRED:
            self._paired = self._paired | {talker_id}
        return PAIR_REPLIES[outcome].format(prefix=self._prefix)

    async def _paired_ids(self) -> frozenset[str]:
        if self._pairing is None:
            return frozenset()
        if self._clock() - self._paired_at >= PAIRED_TTL_S:
            try:
                self._paired = await asyncio.to_thread(self._pairing.paired_ids)
                self._paired_at = self._clock()
            except (PeiTuError, OSError) as error:  # the server away: who was paired still is
                log.warning("cannot read who is paired with the bot: %s", error)
        return self._paired

    async def describe(self) -> str:
        """One line for the log at start-up: who is served, and the pairing code."""
        if self.everyone:
            return "the bot answers everyone (PEITU_CHAT__ALLOW_EVERYONE)"
        if self._pairing is None:
            return "the bot answers its allow-list only"
        try:
            code = await asyncio.to_thread(self._pairing.code)
            paired = len(await asyncio.to_thread(self._pairing.paired_ids))
        except (PeiTuError, OSError) as error:
            return f"private bot; its pairing code will be on the web page and in peitu doctor ({error})"
        return (
            f"private bot ({paired} people paired): to use it, send it {self._prefix}绑定 {code} "
            "in a private chat (the code is also in peitu doctor and on the web page)"
        )
