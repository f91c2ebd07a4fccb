"""The Chinese line a person reads for each error: the `message` of every error body.

`detail` stays the English developer text (logs, API clients); the web page shows only
`message`. Short and actionable: what happened, and what to do about it.
"""

from __future__ import annotations

from index.errors import (
    CatalogTooNew,
    DescribeFailed,
    DiskFull,
    IndexBusy,
    IndexMismatch,
    InvalidQuery,
    LibraryNotFound,
    ModelUnavailable,
    PeiTuError,
    PhotoUnreadable,
    Reason,
    RerankFailed,
)

_BY_ERROR: tuple[tuple[type[PeiTuError], str], ...] = (
    (InvalidQuery, "请写上要配图的文案。"),
    (IndexBusy, "已有索引任务在运行，请等它结束后再试。"),
    (LibraryNotFound, "找不到照片图库：请检查 PEITU_LIBRARY 设置的文件夹是否存在。"),
    (IndexMismatch, "向量模型换过了，需要重建索引：请在「索引管理」里点「重建索引」。"),
    (ModelUnavailable, "模型暂时不可用：请在「索引管理」里点「运行检查」看看原因。"),
    (DescribeFailed, "识图模型没有回应，请稍后再试。"),
    (RerankFailed, "排序模型没有回应，请稍后再试。"),
    (CatalogTooNew, "数据目录是新版 PeiTu 建的，请升级 PeiTu。"),
    (DiskFull, "数据目录所在的磁盘满了：请腾出空间后再索引；搜索照常可用。"),
)
_TOO_BIG = frozenset({Reason.TOO_LARGE.value, Reason.TOO_MANY_PIXELS.value})

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
INTERNAL = "服务器出错了，请稍后再试；仍不行请查看服务器日志。"


def message_for_error(error: PeiTuError) -> str:
    """The Chinese line for an error the core raised."""
    if isinstance(error, PhotoUnreadable):
        if error.reason == Reason.NOT_FOUND.value:
            return "这张照片已不在图库里：请重新索引。"
        if error.reason in _TOO_BIG:
            return "照片太大（文件或像素超过上限），换一张小一些的试试。"
        return "这不是能打开的照片：请选择 JPEG、PNG、WebP、HEIC 等照片。"
    return next((text for kind, text in _BY_ERROR if isinstance(error, kind)), INTERNAL)


def message_for_status(status: int) -> str:
    """The Chinese line for an HTTP error without a core error behind it."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return INTERNAL if status >= 500 else "请求没有成功，请稍后再试。"
