"""The chat core's settings (`PEITU_CHAT__*`, `[chat]`) and the old names under `wechat`."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from config import SettingsInvalid, load_settings

OLD_ENV = {
    "PEITU_WECHAT__ALLOW_CONTACTS": '["wxid_alice", "Bob"]',
    "PEITU_WECHAT__ALLOW_EVERYONE": "true",
    "PEITU_WECHAT__RATE_LIMIT_PER_MINUTE": "2",
    "PEITU_WECHAT__GROUP_REQUIRES_MENTION": "false",
}


@pytest.fixture(autouse=True)
def _no_peitu_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PEITU_CONFIG", raising=False)
    for name in [n for n in os.environ if n.startswith("PEITU_")]:
        monkeypatch.delenv(name)


def test_the_chat_core_has_its_own_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEITU_CHAT__ALLOW_ROOMS", '["家"]')
    monkeypatch.setenv("PEITU_CHAT__MAX_TEXT_CHARS", "100")
    monkeypatch.setenv("PEITU_WECHAT__ENDPOINT", "127.0.0.1:8788")
    settings = load_settings()
    assert (settings.chat.allow_rooms, settings.chat.max_text_chars) == (["家"], 100)
    assert (settings.chat.platform, settings.wechat.endpoint) == ("wechat", "127.0.0.1:8788")
    assert not hasattr(settings.wechat, "allow_rooms")  # WeChat's settings are WeChat's only


def test_the_old_wechat_env_names_still_work_with_a_notice(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="config.settings")
    for name, value in OLD_ENV.items():
        monkeypatch.setenv(name, value)
    chat = load_settings().chat
    assert chat.allow_contacts == ["wxid_alice", "Bob"]
    assert (chat.allow_everyone, chat.rate_limit_per_minute) == (True, 2)
    assert chat.group_requires_mention is False
    notices = [r.getMessage() for r in caplog.records]
    assert len(notices) == len(OLD_ENV)
    assert (
        "PEITU_WECHAT__ALLOW_CONTACTS ([wechat] allow_contacts) is now PEITU_CHAT__ALLOW_CONTACTS "
        "([chat] allow_contacts): the old name still works, for now" in notices
    )


def test_a_new_name_wins_over_the_old_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEITU_WECHAT__RATE_LIMIT_PER_MINUTE", "2")
    monkeypatch.setenv("PEITU_CHAT__RATE_LIMIT_PER_MINUTE", "9")
    assert load_settings().chat.rate_limit_per_minute == 9


def test_an_old_toml_table_still_works(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="config.settings")
    config = tmp_path / "peitu.toml"
    config.write_text(
        '[wechat]\nendpoint = "gw:8788"\nallow_rooms = ["家"]\ncommand_prefix = "#"\n',
        encoding="utf-8",
    )
    settings = load_settings(config)
    assert (settings.chat.allow_rooms, settings.chat.command_prefix) == (["家"], "#")
    assert settings.wechat.endpoint == "gw:8788"
    assert sum("is now PEITU_CHAT__" in r.getMessage() for r in caplog.records) == 2


def test_a_bad_old_value_is_refused_under_its_new_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEITU_WECHAT__ALLOW_CONTACTS", "wxid_alice")  # not a JSON list
    with pytest.raises(
        SettingsInvalid, match=r"chat\.allow_contacts \(PEITU_CHAT__ALLOW_CONTACTS\)"
    ):
        load_settings()
