"""Word segmentation (`index.search.segmenter`): jieba's own words and tags, from a dictionary
looked up text by text or read whole, the same either way."""

from __future__ import annotations

from pathlib import Path

import jieba
import pytest
from jieba.posseg import POSTokenizer

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
def jiebas_own() -> tuple[jieba.Tokenizer, POSTokenizer]:
    """jieba's tokenizer and tagger over its whole dictionary, as jieba itself loads it."""
    tokenizer = jieba.Tokenizer()
    tokenizer.initialize()
    return tokenizer, POSTokenizer(tokenizer)


@pytest.mark.parametrize("whole", [False, True])
def test_words_and_tags_are_jiebas_own(
    table: Path, jiebas_own: tuple[jieba.Tokenizer, POSTokenizer], whole: bool
) -> None:
    tokenizer, tagger = jiebas_own
    segmenter_ = Segmenter(Dictionary(table, "test"))
    if whole:
        segmenter_.dictionary.read_all()
    for text in TEXTS:
        assert segmenter_.words(text) == tokenizer.lcut(text), text
        assert segmenter_.tagged(text) == [(p.word, p.flag) for p in tagger.lcut(text)], text


def test_a_short_text_looks_up_only_its_own_fragments(table: Path) -> None:
    dictionary = Dictionary(table, "test")
    assert Segmenter(dictionary).words("海边的日落") == ["海边", "的", "日落"]
    assert 0 < len(dictionary.freq) < 50  # jieba's whole dictionary has ~500,000 entries


def test_the_process_segmenter_answers_as_jieba(
    jiebas_own: tuple[jieba.Tokenizer, POSTokenizer],
) -> None:
    tokenizer, tagger = jiebas_own
    text = "一只狗拿着船桨在海边奔跑"
    assert segmenter.words(text) == tokenizer.lcut(text)
    assert segmenter.tagged(text) == [(p.word, p.flag) for p in tagger.lcut(text)]
    import jieba.posseg

    # the module's own functions still work after the segmenter imported it its way
    assert [(p.word, p.flag) for p in jieba.posseg.lcut(text)] == segmenter.tagged(text)
