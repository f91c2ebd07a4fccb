"""Social sense without an LLM: photos of distressing content stay out of unrelated answers.

A photo whose description names death, suicide, blood, injury or nudity (`distressing_zh.txt`,
one file, its source cited there) is shown only for a text that names such a thing itself, or
that is clearly about the photo (匹配度 `CLEARLY_ABOUT` and up: "运动员摔倒了，教练跑过来" for
an injured player): never as one of the closest, never for an unrelated post. "今天股票又跌了"
never gets "正在跳楼的人"; "今天摔了一跤，膝盖受伤了" may get an injured knee.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

WORDS_FILE = Path(__file__).with_name("distressing_zh.txt")
CLEARLY_ABOUT = 75.0  # the 匹配度 at which a text is about a photo, distressing or not
_EXCEPTION_MARK = "!"
_MASK = "\u25a1"  # stands in for a harmless word, so a distressing word inside it is not seen


@dataclass(frozen=True)
class _Entry:
    word: str
    harmless: tuple[str, ...]  # longer words holding `word` that mean something else

    def found_in(self, text: str) -> bool:
        if self.word not in text:
            return False
        for harmless in self.harmless:
            text = text.replace(harmless, _MASK)
        return self.word in text


class DistressingWords:
    """The entries of a word list (see `distressing_zh.txt` for its format)."""

    def __init__(self, entries: tuple[_Entry, ...]) -> None:
        self._entries = entries

    @classmethod
    def read(cls, path: Path = WORDS_FILE) -> DistressingWords:
        entries = []
        for line in path.read_text(encoding="utf-8").splitlines():
            parts = line.split("#", 1)[0].split()
            if parts:
                harmless = tuple(p.removeprefix(_EXCEPTION_MARK) for p in parts[1:])
                entries.append(_Entry(parts[0], harmless))
        return cls(tuple(entries))

    def __len__(self) -> int:
        return len(self._entries)

    def named_in(self, text: str) -> str | None:
        """The first distressing word the text names, or None."""
        return next((e.word for e in self._entries if e.found_in(text)), None)

    def only_harmless_in(self, text: str) -> bool:
        """True when the text holds a distressing word only inside its harmless forms
        ("股票跌成跳楼价了", "累死了"): it says plainly that it is not about such content."""
        return any(e.word in text and not e.found_in(text) for e in self._entries)


def unasked_distress(words: DistressingWords, text: str, description: str) -> bool:
    """True when the description names distressing content and the text names none."""
    return words.named_in(description) is not None and words.named_in(text) is None


def clearly_about(words: DistressingWords, text: str, match: float) -> bool:
    """Whether a text is about a photo whatever it shows: a 匹配度 of `CLEARLY_ABOUT` and up,
    unless the text's link to it is a harmless form (跳楼价 shares 跳楼 with 正在跳楼的人)."""
    return match >= CLEARLY_ABOUT and not words.only_harmless_in(text)
