"""Ports: the small interfaces behind which every outside thing varies.

A describer is a vision model (or a captions file); an embedder is a sentence-embedding model;
a vector store is Chroma (embedded or client/server), a local HNSW graph or an exact in-memory
one, for the text and the visual collection alike; a reranker is an LLM.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np
import numpy.typing as npt
from PIL import Image

from index.errors import IndexMismatch
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


@dataclass(frozen=True)
class Seen:
    """A description and, when the describer ran an image model that a visual index uses too,
    the photo's visual vector from that same pass (unit length, of `visual_identity`)."""

    text: str
    visual: Vectors | None = None
    visual_identity: str = ""


@runtime_checkable
class SeeingDescriber(Describer, Protocol):
    """A describer whose pass over the pixels also gives the photo's visual vector (the offline
    describer's EfficientNet: one decode and one forward pass serve both)."""

    def describe_seeing(self, photo: PhotoFile, data: bytes | None = None) -> Seen:
        """`describe`, with the visual vector of the same pass. Same errors."""
        ...


@runtime_checkable
class LocalDescriber(Describer, Protocol):
    """A describer that runs its models on this machine's CPU (the offline one): the indexer
    describes at most `parallel` photos at once with it, whatever the vision concurrency."""

    @property
    def parallel(self) -> int: ...


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
    """A photo's row in a collection: its vector (as given, or as a store reads it back: a
    float32 row), its document and metadata."""

    photo_id: str
    vector: Sequence[float] | Vectors
    document: str
    metadata: dict[str, Any] = field(default_factory=dict)


class VectorStore(Protocol):
    """One collection: a vector per photo with its document and metadata, tagged with the
    identity of what made the vectors, searched by cosine. The text vectors (the embedding
    model, its dimension, the document encoding) and the visual ones (the image model:
    `index.visual.store`) are two collections of the same store.

    The bundled stores are Chroma (`index.search.store.ChromaStore`: embedded or client/server;
    the one users get), a local HNSW graph over SQLite for large libraries
    (`index.search.store_hnsw.HnswStore`) and an exact in-memory one
    (`index.search.store_memory.MemoryStore`). Every backend passes the same contract suite,
    for both collections (tests/test_store_contract.py). Filters arrive as `QueryFilters`;
    turning them into a backend's own query language is the backend's job, and a photo is kept
    exactly when `index.understanding.filters.matches` says so.

    A backend subclasses this and writes the first ten members (the collection, then the
    rebuild swap); the others have defaults built on those, which a backend overrides where
    it does better or has more to do (aiogram's storage does the same).

    A collection holding vectors of another identity is never mixed with: `mismatch` says so,
    and reads and writes raise it until a rebuild (`begin_rebuild`, `replace_with`) replaces it.
    """

    # --- the collection ----------------------------------------------------------------------
    @property
    def mismatch(self) -> IndexMismatch | None:
        """The identity problem: set while the stored vectors were made with another identity
        than the configured one (until they are rebuilt, here or by another process)."""
        ...

    def upsert(self, items: Sequence[StoredVector]) -> None:
        """Add or replace these photos' vectors, documents and metadata."""
        ...

    def get(self, photo_ids: Sequence[str]) -> list[StoredVector]:
        """These photos' vectors, documents and metadata; unknown ids are left out."""
        ...

    def query(
        self, vector: Sequence[float], k: int, filters: QueryFilters | None = None
    ) -> list[Candidate]:
        """Up to k nearest photos among those matching `filters`, most similar first;
        similarity = cosine in [-1, 1]. Empty while nothing is stored."""
        ...

    def delete(self, photo_ids: Sequence[str]) -> None:
        """Forget these photos; unknown ids are ignored."""
        ...

    def ids(self) -> set[str]: ...

    def count(self) -> int: ...

    # --- the rebuild swap: vectors of a new identity ----------------------------------------
    def begin_rebuild(self) -> Self:
        """An empty store beside this one, with the configured identity, to fill while this
        one goes on answering queries; then `replace_with` or `discard_rebuild` it."""
        ...

    def replace_with(self, rebuilt: Self) -> None:
        """Put a store from `begin_rebuild` in this one's place: from now on this store (and
        every other opened on the same place) answers with the rebuilt vectors."""
        ...

    def discard_rebuild(self, rebuilt: Self) -> None:
        """Throw away a store from `begin_rebuild` (a cancelled rebuild); this one is kept."""
        ...

    # --- with defaults -----------------------------------------------------------------------
    def set_metadata(self, photo_id: str, metadata: dict[str, Any]) -> None:
        """Replace one photo's metadata, keeping its vector (a moved photo's new path)."""
        for item in self.get([photo_id]):
            self.upsert([StoredVector(item.photo_id, item.vector, item.document, metadata)])

    def nearest(self, vector: Sequence[float], k: int) -> list[tuple[StoredVector, float]]:
        """`query` without filters, each hit as its stored row with its cosine: for a search
        that compares the hits with each other (the visual one's near duplicates)."""
        found = self.query(vector, k)
        rows = {item.photo_id: item for item in self.get([c.photo_id for c in found])}
        return [(rows[c.photo_id], c.similarity) for c in found if c.photo_id in rows]

    def sample(self, size: int, seed: int = 0) -> list[list[float]]:
        """Vectors of up to `size` photos chosen at random (repeatably for a seed)."""
        return [list(map(float, item.vector)) for item in self.get(sampled(self.ids(), size, seed))]

    def ping(self) -> None:
        """Raise `ModelUnavailable` when the store cannot be reached (a server)."""
        return None

    def refresh(self) -> None:
        """Read the store afresh: another process wrote to it (its rebuild, its new vectors)."""
        return None

    def recover(self) -> None:
        """Finish a replacement (`replace_with`) that a killed process left half done. For the
        holder of the index lock: nobody else can be replacing then."""
        return None

    def flush(self) -> None:
        """Make what was written quick to open again (the end of an index job): a store
        whose search structure is a cache of its rows saves it. Writes are durable without it."""
        return None

    def warm(self) -> None:
        """Load what queries read, now (a server's or bot's start-up) rather than on the first
        query; a store may then also keep a small collection in memory and search it exactly
        (`index.search.exact`)."""
        return None


def sampled(ids: set[str], size: int, seed: int) -> list[str]:
    """Up to `size` of the ids, chosen at random (the same for the same seed and ids)."""
    ordered = sorted(ids)
    return random.Random(seed).sample(ordered, size) if len(ordered) > size else ordered


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

    The bundled one is EfficientNet-Lite0 features (`index.visual.embed`); a CLIP or
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
