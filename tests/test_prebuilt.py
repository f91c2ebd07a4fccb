"""Tables kept in the cache folder (`index.prebuilt`): built once, read back whole, rebuilt for a
new source or a damaged file, and never an error when the folder cannot be written."""

from __future__ import annotations

from pathlib import Path

from index.prebuilt import cached_file, cached_table, source_key


class Builds:
    """A table builder that counts its calls."""

    def __init__(self, table: object) -> None:
        self.table = table
        self.calls = 0

    def __call__(self) -> object:
        self.calls += 1
        return self.table


def test_a_table_is_built_once_then_read_back(tmp_path: Path) -> None:
    build = Builds({"海边": 3, "prefix": (0, None), "rows": [[0.5, 1.0]]})
    first = cached_table("words", "k1", build, tmp_path)
    second = cached_table("words", "k1", build, tmp_path)
    assert first == second == build.table and build.calls == 1
    assert [p.name for p in tmp_path.iterdir()] == ["words-k1.marshal"]


def test_a_new_source_replaces_the_older_table(tmp_path: Path) -> None:
    cached_table("words", "k1", Builds({"a": 1}), tmp_path)
    cached_table("other", "k1", Builds({"b": 2}), tmp_path)
    assert cached_table("words", "k2", Builds({"a": 2}), tmp_path) == {"a": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other-k1.marshal", "words-k2.marshal"]


def test_a_damaged_table_is_built_again(tmp_path: Path) -> None:
    (tmp_path / "words-k1.marshal").write_bytes(b"\xff\x00 not marshal")
    build = Builds({"a": 1})
    assert cached_table("words", "k1", build, tmp_path) == {"a": 1} and build.calls == 1
    assert cached_table("words", "k1", build, tmp_path) == {"a": 1} and build.calls == 1


def test_a_folder_that_cannot_be_written_builds_in_memory(tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder", encoding="utf-8")
    build = Builds([1, 2])
    assert cached_table("words", "k1", build, blocked) == [1, 2]
    assert cached_table("words", "k1", build, blocked) == [1, 2] and build.calls == 2
    assert cached_file("db", "k1", ".sqlite3", lambda p: p.write_text("x"), blocked) is None


def test_a_file_is_made_once_and_partial_files_do_not_stay(tmp_path: Path) -> None:
    calls: list[Path] = []

    def write(path: Path) -> None:
        calls.append(path)
        path.write_text("table", encoding="utf-8")

    made = cached_file("db", "k1", ".sqlite3", write, tmp_path)
    again = cached_file("db", "k1", ".sqlite3", write, tmp_path)
    assert made == again == tmp_path / "db-k1.sqlite3" and len(calls) == 1
    assert calls[0] != made and not calls[0].exists()  # written aside, then moved into place
    assert [p.name for p in tmp_path.iterdir()] == ["db-k1.sqlite3"]


def test_source_keys_are_file_name_safe() -> None:
    key = source_key("0.42.1", "5071852-1796631090221606753", "a/b c")
    assert "/" not in key and " " not in key and key.startswith("1-0.42.1-")
