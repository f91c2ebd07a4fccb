"""Keyword side of the hybrid first stage: BM25 over jieba tokens of the photo descriptions.

The index lives in memory. It is built from the stored descriptions on the first search and
rebuilt after each indexing run; a photo found by the dense search but missing from it (indexed
since the last rebuild) is tokenised on the fly, so a stale index only skews the statistics.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from index.search import segmenter

log = logging.getLogger(__name__)

DocumentSource = Callable[[], Mapping[str, str]]  # photo_id -> description

# Function words that carry no content in a photo description; jieba keeps them as tokens.
STOPWORDS = frozenset(
    [
        "的",
        "地",
        "得",
        "了",
        "着",
        "过",
        "在",
        "是",
        "和",
        "与",
        "及",
        "或",
        "也",
        "都",
        "很",
        "被",
        "把",
        "这",
        "那",
        "有",
        "一个",
        "一只",
        "一",
        "个",
        "只",
        "正在",
        "上",
        "中",
        "里",
    ]
)
_NOT_A_WORD = re.compile(r"^[\W_]+$")


def tokenize(text: str) -> list[str]:
    """Content words of a Chinese (or mixed) text: jieba words, lower-cased, no punctuation."""
    return list(_content_words(text))


@functools.lru_cache(maxsize=8192)
def _content_words(text: str) -> tuple[str, ...]:
    """`tokenize`, kept for the texts met last: the match score segments every candidate's
    description on every query, and a library's descriptions come back query after query."""
    words = (word.strip().lower() for word in segmenter.words(text))
    return tuple(w for w in words if w and not _NOT_A_WORD.match(w) and w not in STOPWORDS)


def word_core(word: str) -> str:
    """A doubled word's one character (狗狗 → 狗, 猫猫 → 猫); any other word as it is."""
    return word[0] if len(word) == 2 and word[0] == word[1] else word


def word_information(word: str) -> float:
    """How much a word says in everyday Chinese: ln(total / frequency) by jieba's dictionary
    (人 5.3, 看 6.8, 工作 6.8, 孩子 8.1, 狗 9.7, 海边 11.6); a word it does not know, or knows
    only as a rare one, says a lot (`UNKNOWN_WORD_INFORMATION`)."""
    frequency, total = segmenter.frequency(word)
    if frequency <= 0 or total <= 0:
        return UNKNOWN_WORD_INFORMATION
    return min(UNKNOWN_WORD_INFORMATION, math.log(total / frequency))


UNKNOWN_WORD_INFORMATION = 18.0  # a word seen once in jieba's 60 million

# The word a describer writes for what a text may call otherwise (the offline describer says
# 男人/女人/小孩; captions and posts say 男子, 女士, 小朋友 …): a content word of a text also
# counts in this form.
DESCRIBED_AS = {
    **dict.fromkeys(("男子", "男士", "男生", "男性", "先生", "爸爸", "老爸"), "男人"),
    **dict.fromkeys(("女子", "女士", "女生", "女性", "妈妈", "老妈"), "女人"),
    **dict.fromkeys(("儿童", "小朋友", "孩子们", "娃娃"), "孩子"),
    **dict.fromkeys(("宝宝", "小孩子", "娃"), "小孩"),
    **dict.fromkeys(("男童",), "男孩"),
    **dict.fromkeys(("女童", "姑娘"), "女孩"),
    **dict.fromkeys(("老人家", "老头", "老太太"), "老人"),
    **dict.fromkeys(("单车", "骑车"), "自行车"),
    **dict.fromkeys(("小狗",), "狗"),
}

# One-character words that name something a photo shows (狗, 雪, 船): a word list, not
# part-of-speech tagging (jieba.posseg loads a second model on the query path). Any other
# one-character word (人, 走, 看, 拿, 用) says little on its own.
SUBJECT_CHARACTERS = frozenset(
    "狗猫马牛羊猪鸡鸭鹅鸟鱼兔熊虎狮狼猴鹿蛇龟虾蟹蝶蜂鹰驴"
    "车船桥楼塔墙门窗屋房山海湖河溪江水雪冰雨雾云星月花草树叶林田沙石岩洞岛滩"
    "球琴鼓伞旗灯书笔纸画茶酒饭面粥蛋糕饼果瓜菜肉汤碗杯瓶盘锅桌椅床鞋帽衣裙包箱钟镜帆网"
)


@dataclass(frozen=True)
class Bm25Params:
    k1: float = 1.2
    b: float = 0.75


@dataclass(frozen=True)
class _Corpus:
    """Term counts per photo and the statistics BM25 needs; replaced whole on rebuild."""

    terms: dict[str, Counter[str]] = field(default_factory=dict)
    document_frequency: Counter[str] = field(default_factory=Counter)
    average_length: float = 1.0

    @classmethod
    def of(cls, documents: Mapping[str, str]) -> _Corpus:
        if documents:
            segmenter.load()  # a library's worth of texts: the whole dictionary at once
        terms = {photo_id: Counter(tokenize(text)) for photo_id, text in documents.items()}
        frequency: Counter[str] = Counter()
        for counts in terms.values():
            frequency.update(counts.keys())
        total = sum(sum(counts.values()) for counts in terms.values())
        return cls(terms, frequency, max(1.0, total / max(1, len(terms))))

    def idf(self, term: str) -> float:
        n, df = len(self.terms), self.document_frequency.get(term, 0)
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))


class KeywordIndex:
    """BM25 scores of given photos for a query, over the descriptions from `source`."""

    def __init__(self, source: DocumentSource, params: Bm25Params | None = None) -> None:
        self._source = source
        self._params = params or Bm25Params()
        self._corpus: _Corpus | None = None
        self._lock = threading.Lock()

    def refresh(self) -> None:
        """Rebuild from the source now (call after an indexing run)."""
        documents = self._source()
        corpus = _Corpus.of(documents)
        with self._lock:
            self._corpus = corpus
        log.info("keyword index rebuilt over %d descriptions", len(documents))

    def size(self) -> int:
        """Number of descriptions in the index (0 before the first build)."""
        return len(self._corpus.terms) if self._corpus is not None else 0

    def scores(self, query: str, documents: Sequence[tuple[str, str]]) -> list[float]:
        """BM25 score of each (photo_id, description) for the query, in the given order."""
        corpus = self._built()
        query_terms = set(tokenize(query))
        return [
            self._score(corpus, query_terms, corpus.terms.get(pid) or Counter(tokenize(text)))
            for pid, text in documents
        ]

    def _built(self) -> _Corpus:
        if self._corpus is None:
            self.refresh()
        assert self._corpus is not None
        return self._corpus

    def _score(self, corpus: _Corpus, query: Iterable[str], counts: Counter[str]) -> float:
        k1, b = self._params.k1, self._params.b
        length_norm = k1 * (1.0 - b + b * sum(counts.values()) / corpus.average_length)
        total = 0.0
        for term in query:
            tf = counts.get(term, 0)
            if tf:
                total += corpus.idf(term) * tf * (k1 + 1.0) / (tf + length_norm)
        return total
