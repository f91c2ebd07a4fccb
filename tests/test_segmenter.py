"""Word segmentation (`index.search.segmenter`): jieba's own words and frequencies, from a
dictionary looked up text by text or read whole, the same either way."""

from __future__ import annotations

from pathlib import Path

import jieba
import pytest

from index.search import segmenter
from index.search.segmenter import Dictionary, Segmenter, write_table

TEXTS = [
    "今天蓝天白云",
    "海边的日落",
    "终于去了大理！洱海边的日落太美了哈哈哈",
    "主体：两个人和一只黑狗\n人物动作：一个人在骑自行车\n场景：海边，沙滩",
    "画面可能有：金毛寻回犬、网球\n拍摄时间：2024年7月14日 下午，夏季",
    "iPhone 15 Pro拍的夜景，ISO 3200，f/1.8",
    "张小明和李华在杭州西湖边散步，手里拿着冰淇淋",
    "狗狗和猫猫一起晒太阳😄 #周末日常",
    "一位穿红色衣服的小女孩在草地上奔跑",
    "等车的女人举起了胳膊",
    "老板说明天加班，打工人太难了",
    "  ",
    "",
    "abc DEF 123",
    "新疆维吾尔自治区乌鲁木齐市天山区",
]


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("jieba") / "dictionary.sqlite3"
    write_table(Path(jieba.__file__).with_name("dict.txt"), path)
    return path


@pytest.fixture(scope="module")
def jiebas_own() -> jieba.Tokenizer:
    """jieba's tokenizer over its whole dictionary, as jieba itself loads it."""
    tokenizer = jieba.Tokenizer()
    tokenizer.initialize()
    return tokenizer


@pytest.mark.parametrize("whole", [False, True])
def test_words_and_frequencies_are_jiebas_own(
    table: Path, jiebas_own: jieba.Tokenizer, whole: bool
) -> None:
    tokenizer = jiebas_own
    segmenter_ = Segmenter(Dictionary(table, "test"))
    if whole:
        segmenter_.dictionary.read_all()
    for text in TEXTS:
        assert segmenter_.words(text) == tokenizer.lcut(text), text
        for word in tokenizer.lcut(text):
            assert segmenter_.dictionary.frequency(word) == (tokenizer.FREQ.get(word) or 0), word
    for word in ("狗", "海边", "男人", "不在词典里的词", ""):  # words no text above holds, too
        assert segmenter_.dictionary.frequency(word) == (tokenizer.FREQ.get(word) or 0), word
    assert segmenter_.dictionary.total == tokenizer.total


def test_a_short_text_looks_up_only_its_own_fragments(table: Path) -> None:
    dictionary = Dictionary(table, "test")
    assert Segmenter(dictionary).words("海边的日落") == ["海边", "的", "日落"]
    assert 0 < len(dictionary.freq) < 50  # jieba's whole dictionary has ~500,000 entries


def test_the_process_segmenter_answers_as_jieba(jiebas_own: jieba.Tokenizer) -> None:
    text = "一只狗拿着船桨在海边奔跑"
    assert segmenter.words(text) == jiebas_own.lcut(text)
    assert segmenter.frequency("船桨") == (jiebas_own.FREQ["船桨"], jiebas_own.total)


def test_a_words_frequency_is_looked_up_not_read_whole(table: Path) -> None:
    """The match score weighs a query's words by their frequency: a one-shot query looks up
    those words, it does not read jieba's whole dictionary."""
    dictionary = Dictionary(table, "test")
    assert dictionary.frequency("海边") > dictionary.frequency("海边的日落") == 0
    assert len(dictionary.freq) < 5
