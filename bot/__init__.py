"""The WeChat bot: a thin edge over the core (`index.service.PeiTu`).

`bot.commands`, `bot.guards`, `bot.photos` and `bot.handler` know nothing of wechaty; only
`bot.wechat` (with `bot.wx_compat`, imported before wechaty, and `bot.wx_media`) does.
`bot.main.run` is the process's composition root (`peitu bot`).
"""
