"""The Chinese and English pages say the same: same sections, commands, settings and figures.

README.md is the Chinese landing page and README.en.md its English twin; docs/reference.md and
docs/reference.zh-CN.md are the reference a user reads, in both languages.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAIRS = [
    ("README.en.md", "README.md"),
    ("docs/reference.md", "docs/reference.zh-CN.md"),
    ("docs/deploy.md", "docs/deploy.zh-CN.md"),
]


def _read(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def _commands(text: str) -> list[str]:
    """The lines of the page's code blocks, without their comments."""
    code = re.findall(r"```\w*\n(.*?)```", text, flags=re.S)
    return [re.sub(r"\s+#.*", "", line).rstrip() for block in code for line in block.splitlines()]


def _facts(text: str) -> dict[str, object]:
    return {
        "sections": len(re.findall(r"^## ", text, flags=re.M)),
        "commands": _commands(text),
        "settings": sorted(set(re.findall(r"PEITU_[A-Z_]+|HF_[A-Z_]+|DASHSCOPE_API_KEY", text))),
        "figures": re.findall(r"\b0\.\d{3}\b", text),
    }


def _linked(english: str, chinese: str) -> bool:
    """Each page links to the other by its file name."""
    en_text, zh_text = _read(english), _read(chinese)
    return Path(chinese).name in en_text and Path(english).name in zh_text


@pytest.mark.parametrize(("english", "chinese"), PAIRS[:2])
def test_the_chinese_page_matches_the_english_one(english: str, chinese: str) -> None:
    assert _linked(english, chinese)
    ours, theirs = _facts(_read(english)), _facts(_read(chinese))
    for key in ("sections", "commands", "settings", "figures"):
        assert ours[key] == theirs[key], key
    chinese_text = re.sub(r"[^\u4e00-\u9fff]", "", _read(chinese))
    assert len(chinese_text) >= 200


def test_the_chinese_deployment_guide_names_real_commands_and_is_linked() -> None:
    """The Chinese guide is shorter (sizing stays in English) but every docker command it gives
    is one the English guide gives too, and both link to each other."""
    english, chinese = PAIRS[2]
    assert _linked(english, chinese)
    english_text = _read(english)
    docker_lines = [c for c in _commands(_read(chinese)) if c.startswith("docker compose")]
    assert len(docker_lines) >= 3
    missing = [c for c in docker_lines if c not in english_text]
    assert missing == []


def test_the_landing_page_is_short_and_says_what_it_costs() -> None:
    for name in ("README.md", "README.en.md"):
        text = _read(name)
        assert len(text.splitlines()) <= 160, name  # a landing page, not the reference
        for link in ("docs/reference", "docs/deploy", "docs/development.md"):
            assert link in text, (name, link)
    chinese = _read("README.md")
    for heading in ("用你自己的照片", "花多少钱", "微信机器人", "Docker"):
        assert heading in chinese, heading
