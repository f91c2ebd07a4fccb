"""What the product says for each error the core raises: one row per error, read by every edge.

The server answers a row's `status` with its `page` line (the web page shows it to the admin,
who can act on the server), the bot replies its `chat` line (whoever asks in a chat may not run
the server), and the CLI prints its `cli` head before the English detail. The error's class name
is the code a server's error body names (`"error"`), so a client raises the same error again.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    PhotoChanged,
    PhotoUnreadable,
    Reason,
    RerankFailed,
)


@dataclass(frozen=True)
class ErrorWords:
    """How every edge speaks of one core error (of `kind`; for `PhotoUnreadable`, of `reasons`)."""

    kind: type[PeiTuError]
    status: int
    page: str
    chat: str
    cli: str
    reasons: frozenset[Reason] | None = None  # None: every reason

    def fits(self, error: PeiTuError) -> bool:
        """Whether this row speaks of `error`."""
        if not isinstance(error, self.kind):
            return False
        return self.reasons is None or getattr(error, "reason", None) in self.reasons


_TRY_LATER = "请稍后再试。"
_NOT_A_PHOTO = "这张图片打不开，换一张试试？"
_CANNOT_READ = "读不了这张图"
_REBUILD = "相册索引需要重建，请联系管理员（网页「索引管理」里点「重建索引」）。"
_TOO_BIG = frozenset({Reason.TOO_LARGE, Reason.TOO_MANY_PIXELS})

# The first row that fits an error is its row: a narrower one (a subclass, a reason) goes first.
ERRORS: tuple[ErrorWords, ...] = (
    ErrorWords(
        InvalidQuery, 400, page="请写上要配图的文案。", chat="请写上要配图的文案。", cli="输入有误"
    ),
    ErrorWords(
        IndexBusy,
        409,
        page="已有索引任务在运行，请等它结束后再试。",
        chat="正在整理相册（索引中），" + _TRY_LATER,
        cli="另一个索引任务正在进行",
    ),
    ErrorWords(
        LibraryNotFound,
        409,
        page="找不到照片图库：请检查 PEITU_LIBRARY 设置的文件夹是否存在。",
        chat="还没有配置相册，请联系管理员。",
        cli="图库有问题",
    ),
    ErrorWords(
        IndexMismatch,
        409,
        page="向量模型换过了，需要重建索引：请在「索引管理」里点「重建索引」。",
        chat=_REBUILD,
        cli="索引是另一个向量模型建的，先运行 peitu index --rebuild",
    ),
    ErrorWords(
        ModelUnavailable,
        503,
        page="模型暂时不可用：请在「索引管理」里点「运行检查」看看原因。",
        chat="模型暂时不可用，" + _TRY_LATER,
        cli="模型用不了",
    ),
    ErrorWords(
        DiskFull,
        507,
        page="数据目录所在的磁盘满了：请腾出空间后再索引；搜索照常可用。",
        chat="相册所在的磁盘满了，请联系管理员腾出空间。",
        cli="数据目录所在的磁盘满了",
    ),
    ErrorWords(
        DescribeFailed,
        502,
        page="识图模型没有回应，" + _TRY_LATER,
        chat="暂时看不懂这张图片（识图服务不可用），" + _TRY_LATER,
        cli="识图模型没有回应",
    ),
    ErrorWords(
        RerankFailed,
        502,
        page="排序模型没有回应，" + _TRY_LATER,
        chat="抱歉，出了点问题，" + _TRY_LATER,
        cli="排序模型没有回应",
    ),
    ErrorWords(
        CatalogTooNew,
        500,
        page="数据目录是新版 PeiTu 建的，请升级 PeiTu。",
        chat="抱歉，出了点问题，" + _TRY_LATER,
        cli="数据目录是更新版本的 PeiTu 写的，请升级",
    ),
    ErrorWords(  # a library file gone since the last scan
        PhotoUnreadable,
        404,
        page="这张照片已不在图库里：请重新索引。",
        chat=_NOT_A_PHOTO,
        cli=_CANNOT_READ,
        reasons=frozenset({Reason.NOT_FOUND}),
    ),
    ErrorWords(
        PhotoUnreadable,
        413,
        page="照片太大（文件或像素超过上限），换一张小一些的试试。",
        chat="这张图片太大了（像素太多），换一张小一些的试试？",
        cli=_CANNOT_READ,
        reasons=_TOO_BIG,
    ),
    ErrorWords(
        PhotoUnreadable,
        415,
        page="这不是能打开的照片：请选择 JPEG、PNG、WebP、HEIC 等照片。",
        chat=_NOT_A_PHOTO,
        cli=_CANNOT_READ,
    ),
)

# Any other error the core raised: the server's 500, the bot's apology, the CLI's plain head.
UNEXPECTED = ErrorWords(
    PeiTuError,
    500,
    page="服务器出错了，请稍后再试；仍不行请查看服务器日志。",
    chat="抱歉，出了点问题，" + _TRY_LATER,
    cli="出错了",
)

# The errors a client raises again from the name a server's error body gives (`"error"`).
BY_NAME: dict[str, type[PeiTuError]] = {
    kind.__name__: kind for kind in (*(row.kind for row in ERRORS), PhotoChanged)
}


def words_for(error: PeiTuError) -> ErrorWords:
    """The row that speaks of `error` (`UNEXPECTED` when none does)."""
    return next((row for row in ERRORS if row.fits(error)), UNEXPECTED)
