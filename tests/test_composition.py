"""One composition root: `index.wiring` builds every inner part, the facade only receives them,
and each default of the first stage has one home (`config.settings.RetrievalSettings`)."""

from __future__ import annotations

import ast
from pathlib import Path

import chromadb

from config.settings import RetrievalSettings, Settings
from index.search.retrieval import DocumentEncoder, FusionParams, RetrievalConfig
from index.search.store import ChromaStore

ROOT = Path(__file__).resolve().parent.parent

# The core's inner parts: made in `index/wiring.py`, handed to `PeiTu`, never made by it.
INNER_PARTS = frozenset(
    {
        "Recommender",
        "Indexer",
        "Calibrator",
        "SampleSource",
        "KeywordIndex",
        "QueryVectors",
        "SimilarPhotos",
        "LibraryFiles",
        "RuleBasedUnderstanding",
        "make_retriever",
        "RetrievalConfig",
    }
)


def _calls(path: Path) -> set[str]:
    """Names called anywhere in the module (`Name(...)` or `module.Name(...)`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    called = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            target = node.func
            if isinstance(target, ast.Name):
                called.add(target.id)
            elif isinstance(target, ast.Attribute):
                called.add(target.attr)
    return called


def test_the_facade_builds_none_of_its_parts() -> None:
    built_by_facade = _calls(ROOT / "index" / "service.py") & INNER_PARTS
    assert not built_by_facade, f"index/service.py builds {sorted(built_by_facade)}: wiring's job"


def test_the_composition_root_builds_them() -> None:
    assert INNER_PARTS - {"RetrievalConfig"} <= _calls(ROOT / "index" / "wiring.py")


def test_retrieval_defaults_are_the_settings_defaults() -> None:
    defaults = RetrievalSettings()
    assert RetrievalConfig() == RetrievalConfig.from_settings(defaults)
    assert RetrievalConfig() == RetrievalConfig.from_settings(Settings().retrieval)
    assert DocumentEncoder() == DocumentEncoder(defaults.document_encoding, defaults.whole_weight)
    assert FusionParams().weight == defaults.keyword_weight
    assert RetrievalConfig().strip_filler is defaults.strip_filler


def test_a_store_made_without_an_encoding_expects_the_default_one(tmp_path: Path) -> None:
    """A store and a facade composed without settings agree on the vectors' encoding, so a
    test's (or a plug-in's) `PeiTu` does not see an index built "another way"."""
    client = chromadb.PersistentClient(path=str(tmp_path))
    made = ChromaStore(client, "photos", "m3e-small", 512)
    same = ChromaStore(client, "photos", "m3e-small", 512, RetrievalConfig().encoder.identity)
    made.reset()
    assert same.mismatch is None
    other = ChromaStore(client, "photos", "m3e-small", 512, "whole")
    assert other.mismatch is not None
