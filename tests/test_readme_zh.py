"""The Chinese README says what the English one says: same sections, commands and settings."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _read(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def _facts(text: str) -> dict[str, object]:
    code = re.findall(r"```\w*\n(.*?)```", text, flags=re.S)
    commands = [
        re.sub(r"\s+#.*", "", line).rstrip() for block in code for line in block.splitlines()
    ]
    return {
        "sections": len(re.findall(r"^## ", text, flags=re.M)),
        "commands": commands,
        "settings": sorted(set(re.findall(r"PEITU_[A-Z_]+|HF_[A-Z_]+|DASHSCOPE_API_KEY", text))),
        "figures": re.findall(r"\b0\.\d{3}\b", text),
    }


def test_the_chinese_readme_matches_the_english_one() -> None:
    english, chinese = _read("README.md"), _read("README.zh-CN.md")
    assert "README.zh-CN.md" in english and "README.md" in chinese  # linked both ways
    ours, theirs = _facts(english), _facts(chinese)
    for key in ("sections", "commands", "settings", "figures"):
        assert ours[key] == theirs[key], key
    assert re.search(r"[\u4e00-\u9fff]{200}", re.sub(r"[^\u4e00-\u9fff]", "", chinese))
