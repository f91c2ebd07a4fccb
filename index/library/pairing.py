"""Who may use the chat bot besides its allow-list: the people who sent it the pairing code.

With no allow-list the bot serves nobody but the people paired here (its owner first): a
one-time code of six digits, shown in the bot's log, by `peitu doctor` and on the web page,
which a person sends to the bot (`/绑定 123456`) to be let in. A code lets in one person and is
then replaced. A guesser gets nowhere: after `WRONG_PER_PERSON` wrong codes a person is not
heard until the code changes, and after `WRONG_IN_ALL` wrong codes from anyone the code is
replaced.

Kept in the data folder (`bot-access.json`, written whole and swapped in, under an `flock`), so
the bot, the server that shows the code, and `peitu doctor` read and change the same record.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FILE_NAME = "bot-access.json"
CODE_DIGITS = 6
WRONG_PER_PERSON = 5
WRONG_IN_ALL = 20


class Pairing(StrEnum):
    """What a pairing attempt did."""

    PAIRED = "paired"  # let in now
    ALREADY = "already"  # was let in before
    WRONG = "wrong"  # not the code
    LOCKED = "locked"  # too many wrong codes from this person: not heard until the code changes


@dataclass(frozen=True)
class Paired:
    contact_id: str
    name: str
    paired_at: str


@dataclass
class _Record:
    code: str
    paired: list[Paired] = field(default_factory=list)
    wrong: dict[str, int] = field(default_factory=dict)  # contact id -> wrong codes, this code

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, indent=1)


def new_code() -> str:
    return "".join(secrets.choice("0123456789") for _ in range(CODE_DIGITS))


class BotAccess:
    """The pairing code and the people paired, in `data_dir/bot-access.json`."""

    def __init__(self, data_dir: Path, make_code: Callable[[], str] = new_code) -> None:
        self._path = data_dir / FILE_NAME
        self._lock_path = data_dir / (FILE_NAME + ".lock")
        self._make_code = make_code

    def code(self) -> str:
        """The code that lets the next person in (made now when there is none)."""
        with self._changing() as record:
            return record.code

    def paired(self) -> list[Paired]:
        """The people let in, oldest first."""
        return list(self._read().paired) if self._path.exists() else []

    def paired_ids(self) -> frozenset[str]:
        return frozenset(person.contact_id for person in self.paired())

    def pair(self, code: str, contact_id: str, name: str) -> Pairing:
        """Let `contact_id` in when `code` is the code (which is then replaced)."""
        contact_id, name = _text(contact_id), _text(name)
        with self._changing() as record:
            if any(person.contact_id == contact_id for person in record.paired):
                return Pairing.ALREADY
            if record.wrong.get(contact_id, 0) >= WRONG_PER_PERSON:
                return Pairing.LOCKED
            if not secrets.compare_digest(_text(code.strip()).encode(), record.code.encode()):
                return self._wrong(record, contact_id)
            record.paired.append(Paired(contact_id, name, _now()))
            self._replace_code(record, f"{name} (id {contact_id}) was paired")
            return Pairing.PAIRED

    def replace_code(self, why: str) -> str:
        """Make a new code now (the old one was seen where it should not be); the new one."""
        with self._changing() as record:
            self._replace_code(record, why)
            return record.code

    def _wrong(self, record: _Record, contact_id: str) -> Pairing:
        record.wrong[contact_id] = record.wrong.get(contact_id, 0) + 1
        if sum(record.wrong.values()) >= WRONG_IN_ALL:
            self._replace_code(record, f"{WRONG_IN_ALL} wrong pairing codes")
        return Pairing.WRONG

    def _replace_code(self, record: _Record, why: str) -> None:
        record.code, record.wrong = self._make_code(), {}
        log.warning("%s: the bot's new pairing code is %s", why, record.code)

    @contextmanager
    def _changing(self) -> Iterator[_Record]:
        """The record, read under the lock and written back whole when changed."""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            record = self._read() if self._path.exists() else _Record(self._make_code())
            before = record.to_json()
            yield record
            if record.to_json() != before or not self._path.exists():
                _write_whole(self._path, record.to_json())

    def _read(self) -> _Record:
        try:
            data: dict[str, Any] = json.loads(self._path.read_text(encoding="utf-8"))
            return _Record(
                str(data["code"]),
                [Paired(**person) for person in data.get("paired", [])],
                {str(k): int(v) for k, v in data.get("wrong", {}).items()},
            )
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.error("%s is unreadable (%s): starting a new one", self._path, error)
            return _Record(self._make_code())


def _write_whole(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _text(text: str) -> str:
    """`text` as it can be written in UTF-8 (a lone surrogate from JSON becomes "?")."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
