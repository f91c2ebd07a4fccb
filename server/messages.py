"""The Chinese line a person reads for an HTTP error without a core error behind it.

A core error's line is its row's `page` in `index/error_words.py`. `detail` stays the English
developer text (logs, API clients); the web page shows only `message`, and these lines (served
as `/messages.json`) for an answer that has none. Short and actionable: what happened, and what
to do about it.
"""

from __future__ import annotations

from index.error_words import UNEXPECTED

_BY_STATUS = {
    400: "请求内容有误，请检查后再试。",
    401: "管理令牌不对或没填：请在页面顶部的「管理令牌」里填写并保存。",
    403: "管理令牌不对：请在页面顶部的「管理令牌」里重新填写。",
    404: "找不到这张照片或这个任务，可能已被删除：请重新索引后再试。",
    405: "这个地址不接受这种请求。",
    408: "请求发得太慢，连接已断开：请检查网络后再试。",
    409: "现在不能这样做，请稍后再试。",
    413: "文件太大，超过了服务器允许的大小。",
    415: "不支持的文件类型：请选择 JPEG、PNG、WebP、HEIC 等照片。",
    422: "请求内容有误，请检查后再试。",
    429: "请求太频繁了，请稍等一会儿再试。",
    502: "模型服务返回了错误，请稍后再试。",
    503: "服务暂时不可用，请稍后再试。",
    507: "数据目录所在的磁盘满了：请腾出空间后再试。",
}
INTERNAL = UNEXPECTED.page
OTHER = "请求没有成功，请稍后再试。"


def message_for_status(status: int) -> str:
    """The Chinese line for an HTTP error without a core error behind it."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return INTERNAL if status >= 500 else OTHER


def status_lines() -> dict[str, object]:
    """Every line by status code, as the web page reads them (`/messages.json`)."""
    return {
        "by_status": {str(code): text for code, text in _BY_STATUS.items()},
        "internal": INTERNAL,
        "other": OTHER,
    }
