"""The first stage: description pieces, centroid vectors, filler, BM25 over jieba, fusion."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import chromadb
import numpy as np
import pytest

from index.errors import IndexMismatch
from index.models import Candidate, QueryFilters
from index.ports import Vectors
from index.search.embed import SentenceTransformerEmbedder
from index.search.keyword import KeywordIndex, tokenize
from index.search.retrieval import (
    DocumentEncoder,
    FusionParams,
    HybridRetriever,
    encode_documents,
    fuse_rrf,
    fuse_zscore,
    split_pieces,
    strip_filler,
)
from index.search.store import ChromaStore


class TableEmbedder:
    """Fixed unit vectors per text, so the encoding arithmetic can be checked exactly."""

    def __init__(self, table: Mapping[str, Sequence[float]]) -> None:
        self._table = {text: np.asarray(v, dtype=np.float32) for text, v in table.items()}
        self.calls: list[list[str]] = []

    @property
    def model_name(self) -> str:
        return "table"

    @property
    def dimension(self) -> int:
        return 2

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.calls.append(list(texts))
        rows = [self._table[t] / np.linalg.norm(self._table[t]) for t in texts]
        return np.asarray(rows, dtype=np.float32).reshape(len(texts), 2)


# --- pieces --------------------------------------------------------------------------------
def test_captions_split_on_sentence_ends() -> None:
    assert split_pieces("两只狗在雪地里打闹。一只狗在跑！谁的狗？") == [
        "两只狗在雪地里打闹",
        "一只狗在跑",
        "谁的狗",
    ]


def test_facet_labels_and_empty_facets_are_dropped() -> None:
    description = (
        "主体：海边的日落\n场景：沙滩，傍晚；有风\n人物动作：无\n文字：无\n适合主题：旅行、度假"
    )
    assert split_pieces(description) == ["海边的日落", "沙滩，傍晚", "有风", "旅行、度假"]


def test_a_description_without_boundaries_is_one_piece() -> None:
    assert split_pieces("  草地上奔跑的狗 ") == ["草地上奔跑的狗"]
    assert split_pieces("无") == ["无"]  # nothing else to keep: the text itself


# --- document encodings --------------------------------------------------------------------
_TABLE = {
    "甲。乙": (1.0, 1.0),
    "甲。丙": (0.0, 1.0),
    "甲": (1.0, 0.0),
    "乙": (0.0, 1.0),
    "丙": (3.0, 4.0),
}


def test_whole_encoding_embeds_the_text_once() -> None:
    embedder = TableEmbedder(_TABLE)
    vectors = encode_documents(embedder, ["甲。乙"], "whole")
    np.testing.assert_allclose(vectors, [[2**-0.5, 2**-0.5]], rtol=1e-6)
    assert embedder.calls == [["甲。乙"]]


def test_centroid_is_the_renormalised_mean_of_piece_vectors() -> None:
    table = {"甲": (1.0, 0.0), "丙": (3.0, 4.0)}
    vectors = encode_documents(TableEmbedder(table), ["甲。丙。甲"], "centroid")
    mean = (2 * np.array([1.0, 0.0]) + np.array([0.6, 0.8])) / 3
    np.testing.assert_allclose(vectors[0], mean / np.linalg.norm(mean), rtol=1e-6)


def test_repeated_pieces_are_embedded_once() -> None:
    embedder = TableEmbedder(_TABLE)
    encode_documents(embedder, ["甲。乙", "乙。丙"], "centroid")
    assert embedder.calls == [["甲", "乙", "丙"]]


def test_mixture_weights_whole_against_centroid() -> None:
    vectors = encode_documents(TableEmbedder(_TABLE), ["甲。乙"], "mixture", whole_weight=0.25)
    centroid = np.array([1.0, 1.0]) / 2**0.5  # mean of (1,0) and (0,1), renormalised
    whole = np.array([1.0, 1.0]) / 2**0.5
    np.testing.assert_allclose(vectors[0], 0.75 * centroid + 0.25 * whole, rtol=1e-6)
    vectors = encode_documents(TableEmbedder(_TABLE), ["甲。丙"], "mixture", whole_weight=0.5)
    centroid = np.array([1.6, 0.8]) / np.linalg.norm([1.6, 0.8])  # (1,0) and (0.6,0.8)
    expected = 0.5 * centroid + 0.5 * np.array([0.0, 1.0])
    np.testing.assert_allclose(vectors[0], expected / np.linalg.norm(expected), rtol=1e-6)


def test_real_model_vectors_are_unit_length_for_every_encoding(
    embedder: SentenceTransformerEmbedder,
) -> None:
    texts = ["一只黑狗在草地上奔跑。它嘴里叼着球。", "海边玩耍的孩子", "主体：雪山\n场景：冬天"]
    for encoder in (
        DocumentEncoder("whole"),
        DocumentEncoder("centroid"),
        DocumentEncoder("mixture"),
    ):
        vectors = encoder.encode(embedder, texts)
        assert vectors.shape == (3, embedder.dimension)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_encoding_identity_names_the_mixture_weight() -> None:
    assert DocumentEncoder("whole").identity == "whole"
    assert DocumentEncoder("centroid").identity == "centroid"
    assert DocumentEncoder("mixture", 0.3).identity == "mixture-0.3"


def test_index_built_with_another_encoding_is_refused(tmp_path: Path) -> None:
    client = chromadb.PersistentClient(path=str(tmp_path / "chroma"))
    ChromaStore(client, "photos", "m3e-small", 512, "whole").reset()  # made by a write
    other = ChromaStore(client, "photos", "m3e-small", 512, "mixture-0.3")
    assert other.mismatch is not None
    with pytest.raises(IndexMismatch, match=r"document encoding 'whole'.*peitu index --rebuild"):
        other.count()
    other.reset()
    assert other.mismatch is None and other.count() == 0


# --- query side ----------------------------------------------------------------------------
def test_social_filler_is_stripped_but_time_words_stay() -> None:
    assert strip_filler("哈哈哈哈今天去海边玩啦～好开心😄") == "今天去海边玩"
    assert strip_filler("#旅行# 大理的洱海 打卡") == "旅行 大理的洱海"
    assert strip_filler("一个小孩在海边玩耍。") == "一个小孩在海边玩耍。"  # nothing to strip


def test_text_of_filler_only_is_kept_as_it_is() -> None:
    assert strip_filler("哈哈哈😄") == "哈哈哈😄"


# --- BM25 over jieba -------------------------------------------------------------------------
def test_chinese_is_tokenised_into_content_words() -> None:
    tokens = tokenize("两只狗在雪地里打闹。")
    assert "雪地" in tokens and "打闹" in tokens and "狗" in tokens
    assert not {"在", "。", "的"} & set(tokens)


def test_bm25_prefers_the_rarer_word_and_the_shorter_document() -> None:
    documents = {
        "a": "狗在草地上跑",
        "b": "狗在雪地里跑",
        "c": "狗在草地上跑。狗在草地上叫。狗很开心",
    }
    index = KeywordIndex(lambda: documents)
    scores = index.scores("雪地里的狗", list(documents.items()))
    assert scores[1] > scores[0] > 0  # 雪地 is in one document, 狗 in all three
    short, long = index.scores("草地", [("a", documents["a"]), ("c", documents["c"])])
    assert short > 0 and long > 0
    assert index.size() == 3


def test_unknown_photos_are_scored_on_the_fly_and_refresh_sees_new_ones() -> None:
    documents = {"a": "狗在草地上跑"}
    index = KeywordIndex(lambda: dict(documents))
    assert index.scores("雪地", [("new", "猫在雪地里")])[0] > 0
    documents["new"] = "猫在雪地里"
    index.refresh()
    assert index.size() == 2


# --- fusion ----------------------------------------------------------------------------------
def test_zscore_fusion_exact_values() -> None:
    fused = fuse_zscore([0.9, 0.8, 0.7], [0.0, 0.0, 3.0], weight=0.5)
    z_dense = np.array([1.0, 0.0, -1.0]) * (3 / 2) ** 0.5
    z_keyword = np.array([-1.0, -1.0, 2.0]) / 2**0.5
    np.testing.assert_allclose(fused, 0.5 * z_dense + 0.5 * z_keyword, rtol=1e-9)
    assert fuse_zscore([0.5, 0.4], [0.0, 0.0], weight=0.3) == pytest.approx([0.7, -0.7])


def test_rrf_fusion_exact_values() -> None:
    fused = fuse_rrf([0.9, 0.8], [0.0, 5.0], weight=0.5, k=10)
    assert fused == pytest.approx([0.5 / 11 + 0.5 / 12, 0.5 / 12 + 0.5 / 11])


class FixedDense:
    def __init__(self, candidates: list[Candidate]) -> None:
        self.candidates = candidates
        self.asked: list[int] = []

    def search(
        self, text: str, k: int, filters: QueryFilters | None, timings: dict[str, float]
    ) -> list[Candidate]:
        self.asked.append(k)
        return self.candidates[:k]


def _candidate(photo_id: str, similarity: float, description: str) -> Candidate:
    return Candidate(photo_id, f"{photo_id}.jpg", similarity, description)


def test_hybrid_lifts_a_keyword_match_and_keeps_cosines() -> None:
    found = [
        _candidate("dog", 0.80, "草地上的狗"),
        _candidate("cat", 0.79, "沙发上的猫"),
        _candidate("snow", 0.78, "雪地里的狗"),
    ]
    dense = FixedDense(found)
    documents = {c.photo_id: c.description for c in found}
    hybrid = HybridRetriever(dense, KeywordIndex(lambda: documents), FusionParams(0.7, pool=50))
    timings: dict[str, float] = {}
    result = hybrid.search("雪地", 2, None, timings)
    assert [c.photo_id for c in result] == ["snow", "dog"]
    assert result[0].similarity == 0.78  # the cosine, not the fused score
    assert dense.asked == [50] and timings["search"] >= 0.0


def test_zero_keyword_weight_keeps_the_dense_order() -> None:
    found = [_candidate("a", 0.9, "猫"), _candidate("b", 0.8, "雪地")]
    hybrid = HybridRetriever(FixedDense(found), KeywordIndex(dict), FusionParams(0.0))
    assert [c.photo_id for c in hybrid.search("雪地", 2, None, {})] == ["a", "b"]
