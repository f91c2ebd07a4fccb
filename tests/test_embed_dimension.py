"""The embedding dimension read from a model folder's files is the one the loaded model reports.

`peitu status` opens the index with the dimension from the files (no torch); a wrong figure
would make the store's identity check fail. Each folder here is loaded by the real
sentence-transformers afterwards and must agree: m3e-small as shipped (no modules.json: mean
pooling), and m3e-small's weights behind pipelines of Pooling, Dense and Normalize modules.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from index.search.embed import SentenceTransformerEmbedder, configured_dimension, folder_dimension


def _loaded_dimension(folder: Path) -> int:
    from sentence_transformers import SentenceTransformer

    dimension = SentenceTransformer(str(folder), device="cpu").get_embedding_dimension()
    assert dimension is not None
    return int(dimension)


def _pipeline(folder: Path, m3e_path: Path, modules: list[tuple[str, str]]) -> Path:
    """m3e-small's files (linked) with a modules.json naming `modules` (type, path)."""
    folder.mkdir()
    for item in m3e_path.iterdir():
        (folder / item.name).symlink_to(item)
    prefix = "sentence_transformers.sentence_transformer.modules."
    entries = [
        {"idx": i, "name": str(i), "path": path, "type": prefix + kind}
        for i, (kind, path) in enumerate(modules)
    ]
    (folder / "modules.json").write_text(json.dumps(entries), encoding="utf-8")
    return folder


def _write_config(folder: Path, config: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")


def test_m3e_small_as_shipped(m3e_path: Path, embedder: SentenceTransformerEmbedder) -> None:
    assert configured_dimension(str(m3e_path)) == embedder.dimension == 512
    # not loaded yet: the files answer
    assert SentenceTransformerEmbedder(str(m3e_path)).dimension == 512


def test_pooling_modes_then_dense_then_normalize(m3e_path: Path, tmp_path: Path) -> None:
    from sentence_transformers.sentence_transformer.modules import Dense, Pooling

    folder = _pipeline(
        tmp_path / "model",
        m3e_path,
        [("Transformer", ""), ("Pooling", "1_Pooling"), ("Dense", "2_Dense"), ("Normalize", "")],
    )
    for name, module in (
        ("1_Pooling", Pooling(512, ("mean", "max"))),
        ("2_Dense", Dense(1024, 48)),
    ):
        (folder / name).mkdir()
        module.save(str(folder / name))
    assert folder_dimension(folder) == _loaded_dimension(folder) == 48


def test_old_style_pooling_flags(m3e_path: Path, tmp_path: Path) -> None:
    folder = _pipeline(tmp_path / "model", m3e_path, [("Transformer", ""), ("Pooling", "pool")])
    _write_config(
        folder / "pool",
        {
            "word_embedding_dimension": 512,
            "pooling_mode_cls_token": True,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
        },
    )
    # the keys of models saved before sentence-transformers 6 (moka-ai/m3e-base's, say)
    assert folder_dimension(folder) == _loaded_dimension(folder) == 1024


def test_what_the_files_do_not_settle_is_left_to_loading(tmp_path: Path) -> None:
    _write_config(tmp_path / "plain", {"hidden_size": 384})
    assert configured_dimension(str(tmp_path / "plain")) == 384
    _write_config(tmp_path / "projected", {"hidden_size": 768, "projection_dim": 512})
    assert configured_dimension(str(tmp_path / "projected")) is None
    unknown = tmp_path / "unknown"
    _write_config(unknown, {"hidden_size": 384})
    modules = [{"idx": 0, "name": "0", "path": "", "type": "my_package.MyEncoder"}]
    (unknown / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    assert configured_dimension(str(unknown)) is None
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json", encoding="utf-8")
    assert configured_dimension(str(tmp_path / "broken")) is None
    assert configured_dimension(str(tmp_path / "missing")) is None
    assert configured_dimension("moka-ai/no-such-model-here") is None  # not in the hub cache
