"""The chat bot: a thin edge over the core (`index.service.PeiTu`).

The chat core (`bot.commands`, `bot.guards`, `bot.access`, `bot.photos`, `bot.handler`, set by
`ChatSettings`) knows no messenger; a platform adapter does: `bot.wechat` (with `bot.wx_compat`,
imported before wechaty, and `bot.wx_media`). `bot.main.run` is the process's composition root
(`peitu bot`), choosing the adapter by name.
"""
