"""PeiTu settings. Imported by every package; imports nothing of ours."""

from config.settings import (
    ChatSettings,
    ChromaSettings,
    EmbeddingSettings,
    IndexingSettings,
    ModelEndpoint,
    ServerSettings,
    Settings,
    SettingsInvalid,
    WechatSettings,
    load_settings,
    user_cache_dir,
)

__all__ = [
    "ChatSettings",
    "ChromaSettings",
    "EmbeddingSettings",
    "IndexingSettings",
    "ModelEndpoint",
    "ServerSettings",
    "Settings",
    "SettingsInvalid",
    "WechatSettings",
    "load_settings",
    "user_cache_dir",
]
