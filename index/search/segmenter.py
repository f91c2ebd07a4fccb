"""Chinese word segmentation: one jieba tokenizer per process, its dictionary read word by word
from a prebuilt SQLite table as texts need them, or whole when a process asks for it.

jieba's own start-up reads its 9 MB cache with `marshal.load` on the open file, piece by piece
(0.6 CPU-s here). A one-shot command (`peitu recommend`) segments a
few short texts: here it looks up only the fragments of those texts in a table built once from
jieba's dictionary (`index.prebuilt`, the user's cache folder): a few milliseconds. A server or
bot reads the whole dictionary at start-up (`load`, ~0.4 s), off the request path, and so does
the keyword index before it segments a library. A word's frequency (how much it says, for the
match score) is looked up the same way (`frequency`).

The lookups give jieba exactly what its whole dictionary would for these texts: a fragment is
looked up when every shorter prefix of it is a word or a word's prefix, which is how jieba itself
walks its prefix dictionary (`Tokenizer.get_DAG`).
"""

from __future__ import annotations

import logging
import sqlite3
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from index.prebuilt import cached_file, cached_table, file_key, source_key

log = logging.getLogger(__name__)

_CHUNK = 500  # fragments per SQL statement


def words(text: str) -> list[str]:
    """jieba's words of a text (its default mode: dictionary words, HMM for unknown ones)."""
    return default_segmenter().words(text)


def frequency(word: str) -> tuple[int, int]:
    """A word's frequency in jieba's dictionary (0 for a word it does not know) and the
    dictionary's total, looked up in the table (not read whole) unless a process read it."""
    dictionary = default_segmenter().dictionary
    return dictionary.frequency(word), dictionary.total


def load() -> None:
    """Read the whole dictionary now (a server's start-up, a library's worth of texts) rather
    than looking words up text by text."""
    default_segmenter().dictionary.read_all()


class Dictionary:
    """jieba's prefix dictionary as the tokenizer reads it (`freq`: word -> frequency, and 0 for
    each prefix of a word), filled from a SQLite
    table (`write_table`) as texts need them (`cover`), or whole (`read_all`)."""

    def __init__(self, table: Path, key: str) -> None:
        self._key = key  # of the source the table was made from: names the whole-table cache
        self._db = sqlite3.connect(f"{table.as_uri()}?mode=ro", uri=True, check_same_thread=False)
        total = self._db.execute("SELECT value FROM facts WHERE name = 'total'").fetchone()
        self.total = int(total[0])
        self.freq: dict[str, int] = {}
        self._looked_up: set[str] = set()
        self._whole = False
        self._lock = threading.Lock()

    def cover(self, texts: Iterable[str]) -> None:
        """Look up every fragment of these texts that jieba may ask `freq` about."""
        with self._lock:
            if self._whole:
                return
            starts = [(text, k) for text in set(texts) for k in range(len(text))]
            length = 1
            while starts:
                fragments = {text[k : k + length] for text, k in starts}
                self._look_up(fragments - self._looked_up)
                starts = [
                    (text, k)
                    for text, k in starts
                    if k + length < len(text) and text[k : k + length] in self.freq
                ]
                length += 1

    def frequency(self, word: str) -> int:
        """The word's frequency (0 for a prefix of words or a word not in the dictionary)."""
        with self._lock:
            if not self._whole and word not in self._looked_up:
                self._look_up({word})
            return self.freq.get(word, 0)

    def _look_up(self, fragments: set[str]) -> None:
        pending = list(fragments)
        for start in range(0, len(pending), _CHUNK):
            chunk = pending[start : start + _CHUNK]
            marks = ", ".join("?" * len(chunk))
            query = f"SELECT word, freq FROM words WHERE word IN ({marks})"
            self.freq.update(self._db.execute(query, chunk))
        self._looked_up |= fragments

    def read_all(self) -> None:
        """Every word and prefix, at once (from a marshal copy kept in the cache folder)."""
        with self._lock:
            if self._whole:
                return
            self.freq.update(cached_table("jiebafreq", self._key, self._whole_table))
            self._whole = True
            self._looked_up.clear()

    def _whole_table(self) -> dict[str, int]:
        """The table whole: read from a marshal copy in 0.3-0.4 s, from SQLite rows 0.7 s."""
        return dict(self._db.execute("SELECT word, freq FROM words"))


def write_table(source: Path, path: Path) -> None:
    """jieba's dictionary file (`word frequency tag` lines) as the SQLite table `Dictionary`
    reads: every word with its frequency, every prefix of a word with frequency 0."""
    entries: dict[str, int] = {}
    total = 0
    for word, freq in _dictionary_lines(source):
        entries[word] = freq
        total += freq
        for end in range(1, len(word)):
            entries.setdefault(word[:end], 0)
    db = sqlite3.connect(path)
    try:
        db.execute("CREATE TABLE words (word TEXT PRIMARY KEY, freq INTEGER) WITHOUT ROWID")
        db.execute("CREATE TABLE facts (name TEXT PRIMARY KEY, value INTEGER)")
        db.executemany("INSERT INTO words VALUES (?, ?)", entries.items())
        db.execute("INSERT INTO facts VALUES ('total', ?)", (total,))
        db.commit()
    finally:
        db.close()


def _dictionary_lines(source: Path) -> Iterator[tuple[str, int]]:
    with source.open(encoding="utf-8") as lines:
        for line in lines:
            parts = line.split()
            if len(parts) >= 2:
                yield parts[0], int(parts[1])


class Segmenter:
    """jieba's tokenizer over a `Dictionary`."""

    def __init__(self, dictionary: Dictionary) -> None:
        import jieba

        jieba.setLogLevel(logging.WARNING)  # its dictionary-loading chatter is not ours to show
        self.dictionary = dictionary
        self._tokenizer = jieba.Tokenizer()
        self._tokenizer.FREQ, self._tokenizer.total = dictionary.freq, dictionary.total
        self._tokenizer.initialized = True  # jieba's own dictionary and cache are never read

    def words(self, text: str) -> list[str]:
        self.dictionary.cover([text])
        return [str(word) for word in self._tokenizer.lcut(text)]


_default: list[Segmenter] = []
_default_lock = threading.Lock()


def default_segmenter() -> Segmenter:
    """The process's segmenter over jieba's dictionary, made on first use."""
    with _default_lock:
        if not _default:
            _default.append(Segmenter(_jieba_dictionary()))
        return _default[0]


def _jieba_dictionary() -> Dictionary:
    import jieba

    source = Path(jieba.__file__).with_name("dict.txt")
    key = source_key(jieba.__version__, file_key(source))
    table = cached_file("jiebadict", key, ".sqlite3", lambda path: write_table(source, path))
    if table is None:  # no cache folder to keep it in: one in the temporary folder, this once
        table = Path(tempfile.mkdtemp(prefix="peitu-jieba-")) / "dictionary.sqlite3"
        write_table(source, table)
    return Dictionary(table, key)
