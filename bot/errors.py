"""Errors of the bot edge (the core's own errors live in `index.errors`)."""

from __future__ import annotations


class BotError(Exception):
    """Base class of the errors the bot raises on purpose."""


class BotConfigError(BotError):
    """The WeChat settings cannot work (e.g. no puppet service endpoint); the message says why."""


class ImageDownloadFailed(BotError):
    """The image of a message could not be fetched from the puppet service."""
