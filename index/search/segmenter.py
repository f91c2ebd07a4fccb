"""Chinese word segmentation: one jieba tokenizer per process, its dictionary read word by word
from a prebuilt SQLite table as texts need them, or whole when a process asks for it.

jieba's own start-up reads its 9 MB cache with `marshal.load` on the open file, piece by piece
(0.6 CPU-s here), and its part-of-speech tagger (`jieba.posseg`) reads the 5 MB dictionary text
again for the tags when imported (0.3-0.5 s). A one-shot command (`peitu recommend`) segments a
few short texts: here it looks up only the fragments of those texts in a table built once from
jieba's dictionary (`index.prebuilt`, the user's cache folder): a few milliseconds. A server or
bot reads the whole dictionary at start-up (`load`, ~0.4 s), off the request path, and so does
the keyword index before it segments a library. The tagger segments with the same tokenizer.

The lookups give jieba exactly what its whole dictionary would for these texts: a fragment is
looked up when every shorter prefix of it is a word or a word's prefix, which is how jieba itself
walks its prefix dictionary (`Tokenizer.get_DAG`).
"""

from __future__ import annotations

import io
import logging
import sqlite3
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from index.prebuilt import cached_file, cached_table, file_key, source_key

log = logging.getLogger(__name__)

_CHUNK = 500  # fragments per SQL statement


def words(text: str) -> list[str]:
    """jieba's words of a text (its default mode: dictionary words, HMM for unknown ones)."""
    return default_segmenter().words(text)


def tagged(text: str) -> list[tuple[str, str]]:
    """jieba's words of a text with their part-of-speech tags (`jieba.posseg`: n… nouns)."""
    return default_segmenter().tagged(text)


def load() -> None:
    """Read the whole dictionary now (a server's start-up, a library's worth of texts) rather
    than looking words up text by text."""
    default_segmenter().dictionary.read_all()


class Dictionary:
    """jieba's prefix dictionary as the tokenizer reads it (`freq`: word -> frequency, and 0 for
    each prefix of a word) with the words' part-of-speech tags (`tags`), filled from a SQLite
    table (`write_table`) as texts need them (`cover`), or whole (`read_all`)."""

    def __init__(self, table: Path, key: str) -> None:
        self._key = key  # of the source the table was made from: names the whole-table cache
        self._db = sqlite3.connect(f"{table.as_uri()}?mode=ro", uri=True, check_same_thread=False)
        total = self._db.execute("SELECT value FROM facts WHERE name = 'total'").fetchone()
        self.total = int(total[0])
        self.freq: dict[str, int] = {}
        self.tags: dict[str, str] = {}
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

    def _look_up(self, fragments: set[str]) -> None:
        pending = list(fragments)
        for start in range(0, len(pending), _CHUNK):
            chunk = pending[start : start + _CHUNK]
            marks = ", ".join("?" * len(chunk))
            query = f"SELECT word, freq, tag FROM words WHERE word IN ({marks})"
            self._keep(self._db.execute(query, chunk))
        self._looked_up |= fragments

    def _keep(self, rows: Iterable[tuple[str, int, str | None]]) -> None:
        for word, freq, tag in rows:
            self.freq[word] = freq
            if tag is not None:
                self.tags[word] = tag

    def read_all(self) -> None:
        """Every word and prefix, at once (from a marshal copy kept in the cache folder)."""
        with self._lock:
            if self._whole:
                return
            freq, tags = cached_table("jiebawhole", self._key, self._whole_table)
            self.freq.update(freq)
            self.tags.update(tags)
            self._whole = True
            self._looked_up.clear()

    def _whole_table(self) -> tuple[dict[str, int], dict[str, str]]:
        """Both tables whole: read from a marshal copy in 0.3-0.4 s, from SQLite rows 0.7 s."""
        freq = dict(self._db.execute("SELECT word, freq FROM words"))
        tags = dict(self._db.execute("SELECT word, tag FROM words WHERE tag IS NOT NULL"))
        return freq, tags


def write_table(source: Path, path: Path) -> None:
    """jieba's dictionary file (`word frequency tag` lines) as the SQLite table `Dictionary`
    reads: every word with its frequency and tag, every prefix of a word with frequency 0."""
    entries: dict[str, tuple[int, str | None]] = {}
    total = 0
    for word, freq, tag in _dictionary_lines(source):
        entries[word] = (freq, tag)
        total += freq
        for end in range(1, len(word)):
            entries.setdefault(word[:end], (0, None))
    db = sqlite3.connect(path)
    try:
        db.execute(
            "CREATE TABLE words (word TEXT PRIMARY KEY, freq INTEGER, tag TEXT) WITHOUT ROWID"
        )
        db.execute("CREATE TABLE facts (name TEXT PRIMARY KEY, value INTEGER)")
        rows = ((word, freq, tag) for word, (freq, tag) in entries.items())
        db.executemany("INSERT INTO words VALUES (?, ?, ?)", rows)
        db.execute("INSERT INTO facts VALUES ('total', ?)", (total,))
        db.commit()
    finally:
        db.close()


def _dictionary_lines(source: Path) -> Iterator[tuple[str, int, str | None]]:
    with source.open(encoding="utf-8") as lines:
        for line in lines:
            parts = line.split()
            if len(parts) >= 2:
                yield parts[0], int(parts[1]), parts[2] if len(parts) > 2 else None


class Segmenter:
    """jieba's tokenizer (and, when tags are asked for, its tagger) over a `Dictionary`."""

    def __init__(self, dictionary: Dictionary) -> None:
        import jieba

        jieba.setLogLevel(logging.WARNING)  # its dictionary-loading chatter is not ours to show
        self.dictionary = dictionary
        self._tokenizer = jieba.Tokenizer()
        self._tokenizer.FREQ, self._tokenizer.total = dictionary.freq, dictionary.total
        self._tokenizer.initialized = True  # jieba's own dictionary and cache are never read
        self._tagger: Any = None
        self._lock = threading.Lock()

    def words(self, text: str) -> list[str]:
        self.dictionary.cover([text])
        return [str(word) for word in self._tokenizer.lcut(text)]

    def tagged(self, text: str) -> list[tuple[str, str]]:
        tagger = self._made_tagger()
        self.dictionary.cover([text])
        return [(str(pair.word), str(pair.flag)) for pair in tagger.lcut(text)]

    def _made_tagger(self) -> Any:
        with self._lock:
            if self._tagger is None:
                posseg = _posseg_module()
                tagger = posseg.POSTokenizer.__new__(posseg.POSTokenizer)  # its __init__ reads
                tagger.tokenizer = self._tokenizer  # the dictionary text for the tags
                tagger.word_tag_tab = self.dictionary.tags
                self._tagger = tagger
            return self._tagger


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


class _NoDictionary:
    """Stands in for jieba's default tokenizer while `jieba.posseg` is imported: the module makes
    its own tagger then, which would read the whole dictionary text for its tags."""

    def get_dict_file(self) -> io.BytesIO:
        return io.BytesIO(b"")


def _posseg_module() -> Any:
    import jieba

    if "jieba.posseg" in sys.modules:
        return sys.modules["jieba.posseg"]
    default = jieba.dt
    jieba.dt = _NoDictionary()
    try:
        import jieba.posseg as posseg
    finally:
        jieba.dt = default
    posseg.dt = _TaggerOnFirstUse(posseg.POSTokenizer, default)
    return posseg


class _TaggerOnFirstUse:
    """`jieba.posseg.dt` (what `jieba.posseg.lcut` uses) as the module would have made it, made
    when first used: nothing here uses it, but code that imports `jieba.posseg` may."""

    def __init__(self, make: Any, tokenizer: Any) -> None:
        self._make = make
        self._tokenizer = tokenizer
        self._made: Any = None
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        with self._lock:
            if self._made is None:
                self._made = self._make(self._tokenizer)
        return getattr(self._made, name)
