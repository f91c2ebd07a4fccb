"""PeiTu core: scan a photo library, describe, embed, store, recommend.

Nothing here knows about WeChat or HTTP; `bot/`, `server/` and `cli/` are thin edges.
"""
