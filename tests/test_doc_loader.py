"""Word 97–2003 ``.doc`` (issue 12): the piece table read properly (UTF-16 and 8-bit pieces), headings, tables
and fields, encrypted and damaged files named, files that only pretend to be .doc, and a .doc through the
pipeline. The fixtures under tests/fixtures/ were made once by LibreOffice (tests/fixtures/make_doc_fixtures.py).
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path
from typing import Any

import docx
import olefile
import pytest
from langchain_core.embeddings import Embeddings

from ingest.loaders import load_document, supported_extensions
from ingest.loaders.doc import _CLX, _blocks, _Fib, _Paragraph, _paragraphs, _Piece
from ingest.pipeline import ingest_paths
from ingest.store import KnowledgeBase, open_client
from rag_app.errors import DocumentLoadError, EncryptedDocumentError
from rag_app.service import RagService
from rag_app.settings import Settings
from tests.test_ingest_pipeline import result, settings_for

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SAMPLE = FIXTURES / "sample.doc"
ENGLISH = FIXTURES / "english.doc"
ENCRYPTED = FIXTURES / "encrypted.doc"
TABLE = (
    "| 格式 Format | 读取 Reader | 备注 Note |\n"
    "|---|---|---|\n"
    "| .doc | olefile | Word 97–2003 |\n"
    "| .docx | python-docx | 表格保留 |"
)


def _copy(tmp_path: Path, source: Path, name: str = "copy.doc") -> Path:
    target = tmp_path / name
    shutil.copyfile(source, target)
    return target


def _patch_stream(path: Path, stream: str, patch: Any) -> None:
    """Rewrite one stream of an OLE file in place (same size), e.g. to flip a FIB bit."""
    with olefile.OleFileIO(str(path), write_mode=True) as ole:
        data = bytearray(ole.openstream(stream).read())
        patch(data)
        ole.write_stream(stream, bytes(data))


# --- text, headings, tables, fields --------------------------------------------------------------------------


def test_doc_is_a_supported_format() -> None:
    assert ".doc" in supported_extensions() and ".doc" in RagService.supported_extensions()


def test_chinese_and_english_paragraphs_under_their_headings() -> None:
    sections = load_document(SAMPLE).sections
    assert [s.metadata.get("heading") for s in sections] == [
        "安装指南 Installation Guide",
        "安装指南 Installation Guide > 常见问题 FAQ",
    ]
    first, second = (s.text.split("\n\n") for s in sections)
    assert first == [
        "安装指南 Installation Guide",
        "This guide explains how to import documents into the knowledge base.",
        "本指南介绍如何把文档导入知识库。上传文件后，系统会自动切分并建立索引。",
    ]
    assert second[:2] == ["常见问题 FAQ", "如果扫描件没有文字层，请开启光学字符识别功能。"]
    assert second[-1] == "表格之后的段落。The paragraph after the table."


def test_table_becomes_a_markdown_table() -> None:
    text = load_document(SAMPLE).sections[1].text
    assert TABLE in text
    assert text.index("项目主页") < text.index(TABLE) < text.index("表格之后的段落")


def test_field_keeps_its_result_and_drops_its_instruction() -> None:
    text = load_document(SAMPLE).sections[1].text
    assert "See the project site: 项目主页 example.com for more." in text
    assert "HYPERLINK" not in text and "https://example.com/rag" not in text


def test_an_8bit_compressed_piece_is_read_as_cp1252(tmp_path: Path) -> None:
    """LibreOffice writes UTF-16 pieces only; Word writes Western text as 8-bit pieces at fc/2. The fixture's
    one piece is rewritten as such a piece (same text, cp1252 bytes, the fCompressed bit set)."""
    path = _copy(tmp_path, ENGLISH)
    with olefile.OleFileIO(str(path)) as ole:
        word = ole.openstream("WordDocument").read()
        table_name = "1Table" if _Fib.parse(path, word).which_table else "0Table"
        fib = _Fib.parse(path, word)
    original = load_document(path).sections[0].text
    clx = fib.fc_lcb[2 * _CLX]

    def find_piece(table: bytearray) -> tuple[int, int, int]:
        assert table[clx] == 0x02  # a Pcdt right away (no Prc)
        (lcb,) = struct.unpack_from("<I", table, clx + 1)
        assert lcb == 4 * 2 + 8, "one piece"
        cp_end = struct.unpack_from("<I", table, clx + 5 + 4)[0]
        pcd_fc = clx + 5 + 8 + 2
        return pcd_fc, struct.unpack_from("<I", table, pcd_fc)[0], cp_end

    fc = cp_end = 0

    def compress_pcd(table: bytearray) -> None:
        nonlocal fc, cp_end
        pcd_fc, fc, cp_end = find_piece(table)
        assert not fc & 0x40000000
        struct.pack_into("<I", table, pcd_fc, (fc * 2) | 0x40000000)

    _patch_stream(path, table_name, compress_pcd)
    utf16 = word[fc : fc + 2 * cp_end].decode("utf-16-le")

    def write_8bit(data: bytearray) -> None:
        data[fc : fc + cp_end] = utf16.encode("cp1252")

    _patch_stream(path, "WordDocument", write_8bit)
    assert load_document(path).sections[0].text == original
    assert "café, naïve, “quotes” — and a dash." in original


def test_control_characters_fields_and_anchors() -> None:
    """Word's marks: \\r ends a paragraph, \\x0b is a line break, \\x0c a page break, \\x1e a non-breaking
    hyphen; \\x01/\\x08 anchor objects (dropped); nested fields keep only their results."""
    raw = ("Page \x13 PAGE \x141\x15 of \x13 NUMPAGES \x13 inner \x14x\x15\x143\x15\r"
           "line one\x0bline two\x0cnext\x01\x08 e\x1email\x1fless\r"
           "\x13 TOC \\o \x15after a field without result\r")
    piece = _Piece(0, len(raw), 0, compressed=False)
    paragraphs = _paragraphs([piece], raw.encode("utf-16-le"), 0, len(raw), None)
    assert [p.text for p in paragraphs] == [
        "Page 1 of 3",
        "line one\nline two\nnext e-mailless",
        "after a field without result",
    ]


def test_cell_marks_without_paragraph_properties_still_make_rows() -> None:
    """Without PAPX (a damaged property page) a cell mark right after a cell mark ends a row."""
    cells = [_Paragraph(t, "\x07") for t in ("名称", "值", "", "a", "1", "")]
    blocks = _blocks([*cells, _Paragraph("after", "\r")], know_rows=False)
    assert blocks[0][2] == "| 名称 | 值 |\n|---|---|\n| a | 1 |\n\nafter"


# --- encrypted, damaged, not Word at all ---------------------------------------------------------------------


def test_an_encrypted_doc_is_named_with_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(EncryptedDocumentError) as info:
        load_document(ENCRYPTED)
    assert str(ENCRYPTED) in str(info.value) and "password-protected" in info.value.reason
    assert "save it without a password" in info.value.friendly() and "pdf_passwords" not in info.value.friendly()


def test_the_fib_encryption_bit_alone_refuses_the_file(tmp_path: Path) -> None:
    path = _copy(tmp_path, SAMPLE, "flipped.doc")
    _patch_stream(path, "WordDocument", lambda data: data.__setitem__(0x0B, data[0x0B] | 0x01))
    with pytest.raises(EncryptedDocumentError, match="flipped.doc"):
        load_document(path)


def test_a_truncated_doc_is_a_load_error(tmp_path: Path) -> None:
    path = tmp_path / "truncated.doc"
    path.write_bytes(SAMPLE.read_bytes()[:5000])
    with pytest.raises(DocumentLoadError) as info:
        load_document(path)
    assert "truncated.doc" in str(info.value) and "damaged" in info.value.reason


def test_ole_garbage_is_a_load_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.doc"
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(range(256)) * 40)
    with pytest.raises(DocumentLoadError, match="damaged Word 97–2003 file"):
        load_document(path)


def test_an_ole_file_without_word_document(tmp_path: Path) -> None:
    path = _copy(tmp_path, SAMPLE, "spreadsheet.doc")
    data = bytearray(path.read_bytes())
    name = "WordDocument".encode("utf-16-le")
    assert data.count(name) == 1
    at = data.index(name)
    data[at : at + 2] = "X".encode("utf-16-le")  # the directory entry renamed: no WordDocument stream
    path.write_bytes(bytes(data))
    with pytest.raises(DocumentLoadError, match="not a Word 97–2003 file: an OLE file without a WordDocument"):
        load_document(path)


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [(0, 0x1234, "no Word signature"), (2, 0x0065, "Word 6/95")],
)
def test_fib_that_is_not_word97(tmp_path: Path, offset: int, value: int, message: str) -> None:
    path = _copy(tmp_path, SAMPLE)
    _patch_stream(path, "WordDocument", lambda data: struct.pack_into("<H", data, offset, value))
    with pytest.raises(DocumentLoadError, match=message):
        load_document(path)


def test_a_broken_piece_table_is_a_load_error(tmp_path: Path) -> None:
    path = _copy(tmp_path, SAMPLE)
    with olefile.OleFileIO(str(path)) as ole:
        fib = _Fib.parse(path, ole.openstream("WordDocument").read())
    clx = fib.fc_lcb[2 * _CLX]
    _patch_stream(path, "1Table" if fib.which_table else "0Table", lambda data: data.__setitem__(clx, 0x07))
    with pytest.raises(DocumentLoadError, match="no piece table"):
        load_document(path)


def test_rtf_named_doc_says_what_it_is(tmp_path: Path) -> None:
    path = tmp_path / "letter.doc"
    path.write_bytes(rb"{\rtf1\ansi\deff0 {\fonttbl {\f0 Times;}} Hello}")
    with pytest.raises(DocumentLoadError, match="RTF file named .doc") as info:
        load_document(path)
    assert "letter.doc" in str(info.value) and ".docx" in info.value.friendly()


def test_html_named_doc_is_read_as_html(tmp_path: Path) -> None:
    path = tmp_path / "page.doc"
    path.write_bytes("<html><head><meta charset='utf-8'></head><body><p>网页另存为 Word 文档。</p></body></html>"
                     .encode())
    assert "网页另存为 Word 文档。" in load_document(path).sections[0].text


def test_docx_named_doc_is_read_as_docx(tmp_path: Path) -> None:
    document = docx.Document()
    document.add_paragraph("改了扩展名的 docx 文件。")
    path = tmp_path / "renamed.doc"
    document.save(str(path))
    assert load_document(path).sections[0].text == "改了扩展名的 docx 文件。"


def test_plain_bytes_named_doc(tmp_path: Path) -> None:
    path = tmp_path / "notes.doc"
    path.write_bytes(b"just some text")
    with pytest.raises(DocumentLoadError, match="does not start with the OLE2 signature"):
        load_document(path)


# --- through the pipeline ------------------------------------------------------------------------------------


def test_doc_through_the_pipeline(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copyfile(SAMPLE, folder / "手册.doc")
    shutil.copyfile(ENCRYPTED, folder / "locked.doc")
    settings = settings_for(tmp_path / "data")
    report = ingest_paths(settings, [folder], embeddings=fake_embeddings)
    assert result(report, "in/手册.doc").status == "added"
    locked = result(report, "in/locked.doc")
    assert locked.status == "failed" and "password-protected" in locked.reason
    got = KnowledgeBase(open_client(settings.data_dir), "default", fake_embeddings)._collection.get(
        include=["documents", "metadatas"])
    table_chunks = [(d, m) for d, m in zip(got["documents"], got["metadatas"], strict=True) if "| 格式 Format" in d]
    assert table_chunks and TABLE in table_chunks[0][0]  # kept whole
    assert table_chunks[0][1]["heading"] == "安装指南 Installation Guide > 常见问题 FAQ"


@pytest.mark.e2e
def test_chinese_passage_retrieved_from_a_doc(tmp_path: Path, real_embeddings: Any) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    shutil.copyfile(SAMPLE, folder / "guide.doc")
    (folder / "weather.txt").write_text("今天天气晴朗，适合去公园散步。明天可能下雨，记得带伞。", encoding="utf-8")
    (folder / "cooking.md").write_text("# 做饭\n\n红烧肉需要先焯水，再加糖炒色，最后小火慢炖一个小时。", encoding="utf-8")
    service = RagService(Settings.load(data_dir=tmp_path / "data"), embeddings=real_embeddings)
    report = service.ingest([folder])
    assert not report.failed, report.summary()
    hits = service.retriever().invoke("扫描件没有文字层怎么办？")
    assert hits[0].metadata["source"] == "docs/guide.doc"
    assert "如果扫描件没有文字层,请开启光学字符识别功能。" in hits[0].page_content  # NFKC: "，" → ","
