"""PeiTu settings. Imported by every package; imports nothing of ours."""

from config.settings import (
    ChromaSettings,
    EmbeddingSettings,
    IndexingSettings,
    ModelEndpoint,
    ServerSettings,
    Settings,
    SettingsInvalid,
    WechatSettings,
    load_settings,
)

__all__ = [
    "ChromaSettings",
    "EmbeddingSettings",
    "IndexingSettings",
    "ModelEndpoint",
    "ServerSettings",
    "Settings",
    "SettingsInvalid",
    "WechatSettings",
    "load_settings",
]
