"""Ports: the small interfaces behind which every outside thing varies.

A describer is a vision model (or a captions file); an embedder is a sentence-embedding model;
a vector store is Chroma (embedded or client/server); a reranker is an LLM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from PIL import Image

from index.models import Candidate, Judgement, ParsedQuery, PhotoFile, QueryFilters

Vectors = npt.NDArray[np.float32]


class Describer(Protocol):
    """Writes a Chinese description of one photo."""

    @property
    def key(self) -> str:
        """Identity of (model, prompt version): descriptions are cached under it."""
        ...

    def describe(self, photo: PhotoFile, data: bytes | None = None) -> str:
        """Describe the photo. Raises `DescribeFailed` or `PhotoUnreadable`; never returns ''.

        `data`, when given, is the file's content already read and checked against
        `photo.photo_id`: describe those bytes, not the file, which may have changed since."""
        ...

    def describe_bytes(self, data: bytes) -> str:
        """Describe an image given as bytes (an upload, a chat image). Same errors as `describe`."""
        ...


class Embedder(Protocol):
    """Turns texts into L2-normalised vectors."""

    @property
    def model_name(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Return an array of shape (len(texts), dimension), each row of unit length."""
        ...


@dataclass(frozen=True)
class StoredVector:
    photo_id: str
    vector: Sequence[float]
    document: str
    metadata: dict[str, Any] = field(default_factory=dict)


class VectorStore(Protocol):
    """Stores one vector per photo and finds the nearest by cosine."""

    def upsert(self, items: Sequence[StoredVector]) -> None: ...

    def query(
        self, vector: Sequence[float], k: int, where: dict[str, Any] | None = None
    ) -> list[Candidate]:
        """Up to k nearest photos, most similar first; similarity = cosine in [-1, 1].

        `where` is a Chroma metadata filter (see `index.filters.chroma_where`).
        """
        ...

    def delete(self, photo_ids: Sequence[str]) -> None: ...

    def ids(self) -> set[str]: ...

    def count(self) -> int: ...

    def sample(self, size: int, seed: int = 0) -> list[list[float]]:
        """Vectors of up to `size` photos chosen at random (repeatably for a seed)."""
        ...

    def ping(self) -> None:
        """Raise `ModelUnavailable` when the store cannot be reached."""
        ...


class Reranker(Protocol):
    """Judges candidates against a text for relevance, mood and social fit."""

    @property
    def model_name(self) -> str: ...

    def rerank(self, text: str, candidates: Sequence[Candidate]) -> list[Judgement]:
        """One judgement per candidate it kept. Raises `RerankFailed` on any unusable answer."""
        ...


class Retriever(Protocol):
    """The first stage: candidates for a text, most similar first."""

    def search(
        self, text: str, k: int, filters: QueryFilters | None, timings: dict[str, float]
    ) -> list[Candidate]:
        """Up to k candidates; adds its time in ms to `timings["embed"]` / `timings["search"]`."""
        ...


class QueryUnderstanding(Protocol):
    """Splits social text into semantic words and time/place filters."""

    def parse(self, text: str) -> ParsedQuery: ...


class VisualEmbedder(Protocol):
    """Turns images into L2-normalised vectors of what they look like (photo → similar photos).

    The bundled one is EfficientNet-Lite0 features (`index.visual_embed`); a CLIP or
    Chinese-CLIP image encoder (a local model folder, or an HTTP service such as Immich's
    machine learning) fits the same port. Vectors of two identities are never mixed.
    """

    @property
    def identity(self) -> str:
        """Model and preprocessing version, e.g. "efficientnet-lite0/avgpool@v1": the visual
        collection is rebuilt when it changes."""
        ...

    @property
    def dimension(self) -> int: ...

    def embed_images(self, images: Sequence[Image.Image]) -> Vectors:
        """One unit-length row per image (upright, any mode and size). Raises
        `ModelUnavailable` when the model cannot be loaded or reached."""
        ...
