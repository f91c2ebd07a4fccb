"""First-stage retrieval: from a text to candidate photos.

Documents: a description is split into sentences / facets ("主体：…", "场景：…"); each piece is
embedded and the stored vector is the renormalised mean of the pieces ("centroid"), optionally
mixed with the vector of the whole text ("mixture"). The old whole-text vector is "whole".
`encode_documents` is how the indexer turns descriptions into stored vectors; the encoding is
part of the vector collection's identity, so retrieval and indexing always agree on it.

Queries: social filler ("哈哈哈", "好开心", emoji) is stripped before embedding; the dense hits
can then be re-ordered by fusing their cosine with a BM25 keyword score (`HybridRetriever`).
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from config.settings import RetrievalSettings
from index.models import Candidate, QueryFilters
from index.ports import Embedder, Retriever, Vectors, VectorStore
from index.search.keyword import KeywordIndex

DocumentEncoding = Literal["whole", "centroid", "mixture"]
Fusion = Literal["zscore", "rrf"]

_PIECE_BOUNDARY = re.compile(r"[。！？；!?;\n]+")
_FACET_LABEL = re.compile(r"^[\u4e00-\u9fffA-Za-z]{1,6}\s*[:：]\s*")
_EMPTY_FACETS = frozenset({"无", "没有", "暂无", "none", "n/a"})
_PIECE_TRIM = " \t，,、。.：:"
_DEFAULTS = RetrievalSettings.model_fields  # the one home of these defaults: config.settings


def split_pieces(description: str) -> list[str]:
    """Sentences and facets of a description, without facet labels or empty facets ("无")."""
    pieces = []
    for part in _PIECE_BOUNDARY.split(description):
        text = _FACET_LABEL.sub("", part.strip(), count=1).strip(_PIECE_TRIM)
        if text and text.lower() not in _EMPTY_FACETS:
            pieces.append(text)
    return pieces or [description.strip()]


def _normalised(vectors: Vectors) -> Vectors:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.asarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


def _embed_unique(embedder: Embedder, texts: Sequence[str]) -> dict[str, Vectors]:
    """Embed each distinct text once (pieces repeat within and across descriptions)."""
    unique = list(dict.fromkeys(texts))
    return dict(zip(unique, embedder.embed(unique), strict=True))


def piece_centroids(embedder: Embedder, descriptions: Sequence[str]) -> Vectors:
    """Per description: the renormalised mean of its pieces' unit vectors."""
    pieces = [split_pieces(text) for text in descriptions]
    vectors = _embed_unique(embedder, [p for group in pieces for p in group])
    means = [np.mean([vectors[p] for p in group], axis=0) for group in pieces]
    return _normalised(np.asarray(means, dtype=np.float32))


def encoder_inputs(descriptions: Sequence[str], encoding: DocumentEncoding) -> list[str]:
    """The distinct texts the encoding gives the encoder for these descriptions (what indexing
    them costs: ~4.6 a description for the eval set's four-sentence descriptions in "mixture")."""
    if encoding == "whole":
        return list(descriptions)
    pieces = [p for text in descriptions for p in split_pieces(text)]
    return list(dict.fromkeys([*pieces, *descriptions] if encoding == "mixture" else pieces))


def encode_documents(
    embedder: Embedder,
    descriptions: Sequence[str],
    encoding: DocumentEncoding = "whole",
    whole_weight: float = 0.3,
) -> Vectors:
    """The stored (unit) vector of each description under the given encoding."""
    if not descriptions:
        return np.zeros((0, embedder.dimension), dtype=np.float32)
    if encoding == "whole":
        return embedder.embed(descriptions)
    if encoding == "centroid":
        return piece_centroids(embedder, descriptions)
    # One encoder call for every distinct piece and whole text (`encoder_inputs`): a
    # one-sentence description's whole is its only piece, and pieces repeat across descriptions.
    pieces = [split_pieces(text) for text in descriptions]
    inputs = encoder_inputs(descriptions, encoding)
    vectors = dict(zip(inputs, embedder.embed(inputs), strict=True))
    means = [np.mean([vectors[p] for p in group], axis=0) for group in pieces]
    centroids = _normalised(np.asarray(means, dtype=np.float32))
    whole = np.asarray([vectors[text] for text in descriptions], dtype=np.float32)
    return _normalised((1.0 - whole_weight) * centroids + whole_weight * whole)


@dataclass(frozen=True)
class DocumentEncoder:
    """How descriptions become stored vectors; `identity` is recorded with the collection."""

    encoding: DocumentEncoding = _DEFAULTS["document_encoding"].default
    whole_weight: float = _DEFAULTS["whole_weight"].default

    @property
    def identity(self) -> str:
        if self.encoding == "mixture":
            return f"mixture-{self.whole_weight:g}"
        return self.encoding

    def encode(self, embedder: Embedder, descriptions: Sequence[str]) -> Vectors:
        """Vectors for `descriptions`, one unit row each."""
        return encode_documents(embedder, descriptions, self.encoding, self.whole_weight)

    def inputs(self, descriptions: Sequence[str]) -> list[str]:
        """The distinct texts `encode` gives the encoder for these descriptions."""
        return encoder_inputs(descriptions, self.encoding)


# --- query side ---------------------------------------------------------------------------
# General social filler only; time and place words belong to query understanding (index/understanding/query.py).
_FILLER = re.compile(
    r"[\U0001F000-\U0001FAFF\u2600-\u27BF\uFE0F\u200d]"  # emoji and pictographs
    r"|[#＃~～…]+"  # hashtag marks (the tag's words stay), tildes, ellipses
    r"|[哈嘿呵嘻]{2,}|[hH]{3,}|2333+"  # laughter
    r"|(?<![的得])(?:好开心|太开心了|超开心)|心情(?:真|很|超|好)?(?:好|不错|美丽|愉快)"
    r"|分享一下|记录一下|打卡"
    r"|(?<=[\u4e00-\u9fff])[啊呀吧呢啦哦嘛哇噢耶]+(?=[^\u4e00-\u9fffA-Za-z0-9]|$)"  # final particles
)
_SPACES = re.compile(r"\s+")


def strip_filler(text: str) -> str:
    """The text without social filler; the original text when nothing would be left."""
    if not _FILLER.search(text):
        return text
    stripped = _SPACES.sub(" ", _FILLER.sub(" ", text)).strip(" ，,。！!？?")
    return stripped or text


def _keep(text: str) -> str:
    return text


class QueryVectors:
    """The unit vector of a query text as the first stage embeds it (filler stripped), kept
    for the last few texts: the calibration asks for the same text right after the search."""

    def __init__(
        self, embedder: Embedder, prepare: Callable[[str], str] = _keep, size: int = 64
    ) -> None:
        self._embedder = embedder
        self._prepare = prepare
        self._size = size
        self._cache: OrderedDict[str, Vectors] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, text: str) -> Vectors:
        with self._lock:
            if text in self._cache:
                self._cache.move_to_end(text)
                return self._cache[text]
        vector: Vectors = self._embedder.embed([self._prepare(text)])[0]
        with self._lock:
            self._cache[text] = vector
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return vector


class DenseRetriever:
    """Embed the (filler-stripped) text, take the nearest photos by cosine."""

    def __init__(
        self,
        embedder: Embedder,
        store: VectorStore,
        prepare: Callable[[str], str] = _keep,
        vectors: QueryVectors | None = None,
    ) -> None:
        self._store = store
        self._vectors = vectors or QueryVectors(embedder, prepare)

    def search(
        self, text: str, k: int, filters: QueryFilters | None, timings: dict[str, float]
    ) -> list[Candidate]:
        """Up to k photos by cosine, most similar first, among those matching `filters`."""
        start = time.perf_counter()
        vector = self._vectors(text)
        middle = time.perf_counter()
        found = self._store.query(vector.tolist(), k, filters)
        _add_ms(timings, "embed", start, middle)
        _add_ms(timings, "search", middle, time.perf_counter())
        return found


def _add_ms(timings: dict[str, float], name: str, start: float, end: float) -> None:
    timings[name] = timings.get(name, 0.0) + (end - start) * 1000.0


# --- fusion -------------------------------------------------------------------------------
def _zscores(values: Sequence[float]) -> list[float]:
    array = np.asarray(values, dtype=np.float64)
    spread = float(array.std()) if len(values) else 0.0
    if spread < 1e-12:
        return [0.0] * len(values)
    return [float(z) for z in (array - array.mean()) / spread]


def fuse_zscore(dense: Sequence[float], keyword: Sequence[float], weight: float) -> list[float]:
    """(1-w)·z(dense) + w·z(keyword), each standardised over the candidate pool."""
    pairs = zip(_zscores(dense), _zscores(keyword), strict=True)
    return [(1.0 - weight) * d + weight * k for d, k in pairs]


def _ranks(values: Sequence[float]) -> list[int]:
    """0-based rank of each value, highest first; ties keep the given order."""
    order = sorted(range(len(values)), key=lambda i: -values[i])
    ranks = [0] * len(values)
    for rank, index in enumerate(order):
        ranks[index] = rank
    return ranks


def fuse_rrf(
    dense: Sequence[float], keyword: Sequence[float], weight: float, k: int = 60
) -> list[float]:
    """Weighted reciprocal-rank fusion: (1-w)/(k+rank_dense) + w/(k+rank_keyword), 1-based."""
    pairs = zip(_ranks(dense), _ranks(keyword), strict=True)
    return [(1.0 - weight) / (k + d + 1) + weight / (k + kw + 1) for d, kw in pairs]


@dataclass(frozen=True)
class FusionParams:
    weight: float = _DEFAULTS["keyword_weight"].default  # keyword score's share; 0 = dense
    method: Fusion = _DEFAULTS["fusion"].default
    rrf_k: int = _DEFAULTS["rrf_k"].default
    pool: int = _DEFAULTS["candidate_pool"].default  # dense hits re-ordered by the fusion


class HybridRetriever:
    """Dense hits (a wider pool) re-ordered by fusing cosine with BM25 over descriptions.

    Only dense hits are fused, so every candidate keeps a true cosine `similarity` (the
    threshold stays meaningful) and any filter the dense search applies still holds.
    """

    def __init__(
        self,
        dense: Retriever,
        keywords: KeywordIndex,
        params: FusionParams,
        prepare: Callable[[str], str] = _keep,
    ) -> None:
        self._dense = dense
        self._keywords = keywords
        self._params = params
        self._prepare = prepare

    def search(
        self, text: str, k: int, filters: QueryFilters | None, timings: dict[str, float]
    ) -> list[Candidate]:
        """Up to k photos in fused order."""
        found = self._dense.search(text, max(k, self._params.pool), filters, timings)
        start = time.perf_counter()
        documents = [(c.photo_id, c.description) for c in found]
        keyword = self._keywords.scores(self._prepare(text), documents)
        fused = self._fuse([c.similarity for c in found], keyword)
        order = sorted(range(len(found)), key=lambda i: -fused[i])
        _add_ms(timings, "search", start, time.perf_counter())
        return [found[i] for i in order[:k]]

    def _fuse(self, dense: Sequence[float], keyword: Sequence[float]) -> list[float]:
        p = self._params
        if p.method == "rrf":
            return fuse_rrf(dense, keyword, p.weight, p.rrf_k)
        return fuse_zscore(dense, keyword, p.weight)


@dataclass(frozen=True)
class RetrievalConfig:
    """The first stage as built from `Settings.retrieval`; its defaults are that model's (the
    measured winner), so a `PeiTu` composed without settings searches as the product does."""

    encoder: DocumentEncoder = DocumentEncoder()
    fusion: FusionParams = FusionParams()
    strip_filler: bool = _DEFAULTS["strip_filler"].default

    @classmethod
    def from_settings(cls, settings: RetrievalSettings) -> RetrievalConfig:
        return cls(
            encoder=DocumentEncoder(settings.document_encoding, settings.whole_weight),
            fusion=FusionParams(
                settings.keyword_weight, settings.fusion, settings.rrf_k, settings.candidate_pool
            ),
            strip_filler=settings.strip_filler,
        )


def query_preparation(config: RetrievalConfig) -> Callable[[str], str]:
    """What is done to a query text before it is embedded."""
    return strip_filler if config.strip_filler else _keep


def make_retriever(
    embedder: Embedder,
    store: VectorStore,
    config: RetrievalConfig,
    keywords: KeywordIndex | None,
    vectors: QueryVectors | None = None,
) -> Retriever:
    """Dense search, wrapped in BM25 fusion when a keyword index is given and weighted."""
    prepare = query_preparation(config)
    dense = DenseRetriever(embedder, store, prepare, vectors)
    if keywords is None or config.fusion.weight <= 0.0:
        return dense
    return HybridRetriever(dense, keywords, config.fusion, prepare)
