"""Text cleaning (NFKC, re-joined PDF lines, mojibake detection) and the Chinese-aware splitter."""

from __future__ import annotations

import re

import pytest
from langchain_core.documents import Document

from ingest.clean import clean_text, garbage_ratio, looks_unreadable, normalize, rejoin_broken_lines, tidy_whitespace
from ingest.embed import estimate_tokens
from ingest.split import make_splitter, split_documents

ZH_SENTENCES = [
    "知识库问答系统先把文档切成小块并计算向量。",
    "用户提问时，系统检索最相关的几个片段！",
    "这些片段和问题一起交给本地大模型生成回答？",
    "回答里用编号标出引用的资料，方便核对。",
    "所有数据都保存在本机，不会上传到任何服务器。",
    "中文文本没有空格，所以切分时要依靠标点符号。",
    "句号、问号和感叹号都应该留在句子的末尾！",
    "如果一句话太长，就在逗号或分号处断开；否则按字符切分。",
    "每个片段都记录它在原文中的起始位置。",
    "这样就能准确地定位引用来自哪一段文字？",
]
ZH_TEXT = "".join(ZH_SENTENCES)

EN_TEXT = (
    "Retrieval augmented generation combines search with a language model. "
    "Documents are split into chunks and embedded into vectors. "
    "When a question arrives, the most similar chunks are retrieved from the store. "
    "The model then writes an answer that cites the numbered sources. "
    "Everything runs locally, so private documents never leave the machine. "
    "Long paragraphs are divided at sentence boundaries whenever possible."
)


# --- cleaning ------------------------------------------------------------------------------------


def test_nfkc_maps_kangxi_radicals() -> None:
    assert normalize("⽤") == "用"
    assert normalize("⼀") == "一"
    assert normalize("使⽤⼀个") == "使用一个"
    assert clean_text("请使⽤⼀个⽂件") == "请使用一个文件"


def test_normalize_newlines_and_control_characters() -> None:
    assert normalize("a\r\nb\rc\x00d\x07e\tf") == "a\nb\ncd" + "e\tf"
    assert normalize("ＡＢＣ１２３") == "ABC123"  # full-width forms


def test_rejoin_chinese_sentence_broken_across_lines() -> None:
    assert rejoin_broken_lines("这是一个被\n打断的句子。") == "这是一个被打断的句子。"
    assert rejoin_broken_lines("知识库，\n问答系统") == "知识库，问答系统"
    assert rejoin_broken_lines("第一行  \n  第二行") == "第一行第二行"


def test_rejoin_does_not_glue_english_words() -> None:
    out = rejoin_broken_lines("hello\nworld")
    assert re.split(r"\s+", out) == ["hello", "world"]
    out = clean_text("The quick brown\nfox jumps", rejoin_lines=True)
    assert out.split() == ["The", "quick", "brown", "fox", "jumps"]
    # mixed: a Chinese line followed by an English word stays separated
    assert clean_text("使用\nPython", rejoin_lines=True).split() == ["使用", "Python"]


def test_rejoin_keeps_paragraph_breaks() -> None:
    assert rejoin_broken_lines("第一段结束。\n\n第二段开始") == "第一段结束。\n\n第二段开始"
    assert rejoin_broken_lines("标题\n\n正文内容") == "标题\n\n正文内容"
    out = clean_text("第一段\n结束。\n\n\n\n第二段\n开始。", rejoin_lines=True)
    assert out == "第一段结束。\n\n第二段开始。"


def test_hyphenation_fix() -> None:
    assert rejoin_broken_lines("infor-\nmation retrieval") == "information retrieval"
    # a real dash before a capitalised word or number is left alone
    assert rejoin_broken_lines("Anglo-\nSaxon") == "Anglo-\nSaxon"


def test_clean_text_without_rejoin_keeps_lines() -> None:
    assert clean_text("这是一个被\n打断的句子。") == "这是一个被\n打断的句子。"


def test_tidy_whitespace() -> None:
    assert tidy_whitespace("  a \t b\u3000c  \n\n\n\n d ") == "a b c\n\nd"


MOJIBAKE = "ÐÂ»ªÉç±±¾©µç " * 5


def test_looks_unreadable_for_latin1_mojibake() -> None:
    assert looks_unreadable(MOJIBAKE)
    assert garbage_ratio(MOJIBAKE) > 0.5


@pytest.mark.parametrize(
    "text",
    [
        ZH_TEXT,
        EN_TEXT,
        "Café crème brûlée à la française, naïve façade — déjà vu.",
        "Ä",  # too short to judge
        "",
    ],
)
def test_readable_text_is_not_flagged(text: str) -> None:
    assert not looks_unreadable(text)


def test_replacement_and_private_use_characters_are_garbage() -> None:
    assert looks_unreadable("\ufffd" * 30)
    assert looks_unreadable("\ue000\ue001\ue002 " * 10)


# --- splitting -----------------------------------------------------------------------------------


def test_chinese_punctuation_stays_with_its_sentence() -> None:
    splitter = make_splitter(len, 40, 8)
    chunks = splitter.split_text(ZH_TEXT)
    assert len(chunks) > 3
    for chunk in chunks:
        assert chunk[0] not in "。！？，；、", chunk
        assert len(chunk) <= 40
    # with room for whole sentences, every chunk ends at a sentence end
    for chunk in chunks:
        assert chunk[-1] in "。！？", chunk


@pytest.mark.parametrize(("size", "overlap"), [(16, 0), (25, 5), (60, 10), (200, 30)])
def test_no_chunk_exceeds_chunk_size(size: int, overlap: int) -> None:
    text = ZH_TEXT + "\n\n" + EN_TEXT + "\n" + "x" * 100
    for count in (len, estimate_tokens):
        chunks = make_splitter(count, size, overlap).split_text(text)
        assert chunks
        assert max(count(c) for c in chunks) <= size


def test_english_split_on_sentence_boundaries() -> None:
    chunks = make_splitter(len, 100, 0).split_text(EN_TEXT)
    assert len(chunks) >= 6
    for chunk in chunks:
        assert chunk.endswith("."), chunk
        assert chunk[0].isupper(), chunk


def test_english_words_are_not_cut() -> None:
    words = set(EN_TEXT.replace(".", " ").split())
    for size in (20, 30, 45):
        for chunk in make_splitter(len, size, 5).split_text(EN_TEXT):
            for word in chunk.replace(".", " ").split():
                assert word in words, (size, chunk)


def test_overlap_larger_than_chunk_size_is_tolerated() -> None:
    chunks = make_splitter(len, 20, 50).split_text(ZH_TEXT)
    assert chunks and max(len(c) for c in chunks) <= 20


def test_split_documents_start_index() -> None:
    text = ZH_TEXT + "\n\n" + EN_TEXT
    doc = Document(page_content=text, metadata={"source": "a.txt", "page": 3})
    chunks = split_documents([doc], len, 50, 10)
    assert len(chunks) > 4
    starts = []
    for chunk in chunks:
        start = chunk.metadata["start_index"]
        assert text[start : start + len(chunk.page_content)] == chunk.page_content
        assert chunk.metadata["source"] == "a.txt" and chunk.metadata["page"] == 3
        starts.append(start)
    assert starts == sorted(starts)
    assert starts[0] == 0


def test_start_index_with_a_token_length_function() -> None:
    # Sized in tokens (here: words) with an overlap: LangChain's own start_index searched past the chunk's
    # start (it takes the overlap for characters) and gave -1 for most chunks.
    text = " ".join(f"word{i}." for i in range(400))
    doc = Document(page_content=text, metadata={})
    chunks = split_documents([doc], lambda t: len(t.split()), 40, 10)
    assert len(chunks) > 5
    for chunk in chunks:
        start = chunk.metadata["start_index"]
        assert start >= 0 and text[start : start + len(chunk.page_content)] == chunk.page_content
    starts = [c.metadata["start_index"] for c in chunks]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)


def test_split_documents_keeps_documents_apart() -> None:
    a = Document(page_content=ZH_TEXT, metadata={"page": 1})
    b = Document(page_content=EN_TEXT, metadata={"page": 2})
    chunks = split_documents([a, b], estimate_tokens, 30, 5)
    pages = [c.metadata["page"] for c in chunks]
    assert pages == sorted(pages) and set(pages) == {1, 2}
    for c in chunks:
        src = ZH_TEXT if c.metadata["page"] == 1 else EN_TEXT
        s = c.metadata["start_index"]
        assert src[s : s + len(c.page_content)] == c.page_content
