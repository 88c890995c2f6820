"""Loaders: text in any common encoding, PDFs (tricky ones from shared/eval), and the errors they raise."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ingest.loaders import LoadOptions, is_supported, load_document, supported_extensions
from rag_app.errors import (
    DocumentLoadError,
    EmptyDocumentError,
    EncryptedDocumentError,
    UnsupportedFileTypeError,
)

ZH = (
    "中华人民共和国是一个位于东亚的国家。北京是首都，上海是最大的城市。"
    "今天天气很好，我们去公园散步吧！你喜欢读书吗？知识库问答系统把文档切成小块。"
)
ZH_TRADITIONAL = (
    "中華民國是一個位於東亞的國家。臺北是首都，高雄是重要的港口城市。"
    "今天天氣很好，我們去公園散步吧！你喜歡讀書嗎？知識庫問答系統把文件切成小塊。"
)
EN = "Hello world. This is plain English text used to test the text loader."


def make_pdf(path: Path, pages: list[str]) -> Path:
    """Write a minimal valid PDF, one page per string (Helvetica, ASCII text; '' = a page with no text)."""
    streams: list[bytes] = []
    for text in pages:
        ops = ["BT", "/F1 12 Tf", "72 720 Td", "14 TL"]
        for line in text.split("\n"):
            ops.append(f"({pdf_string(line)}) Tj T*")
        ops.append("ET")
        streams.append("\n".join(ops).encode("latin-1") if text else b"")
    return write_helvetica_pdf(path, streams)


def pdf_string(text: str) -> str:
    """``text`` escaped for a PDF literal string ``( … )``."""
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def write_helvetica_pdf(path: Path, streams: list[bytes]) -> Path:
    """A PDF with one page per content stream, Helvetica as font /F1."""
    n = len(streams)
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(n))
    objs: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    for i, stream in enumerate(streams):
        objs.append(
            (
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                f"/Resources << /Font << /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>"
            ).encode()
        )
        objs.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    write_pdf_objects(path, objs)
    return path


def write_pdf_objects(path: Path, objs: list[bytes]) -> None:
    """A PDF file of these numbered objects (1 = the catalog), with its cross-reference table."""
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objs, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(bytes(out))


def text_of(path: Path, options: LoadOptions | None = None) -> str:
    return "\n".join(s.text for s in load_document(path, options).sections)


def words(text: str) -> list[str]:
    return text.split()


# --- text encodings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "text", "prefix"),
    [
        ("utf-8", ZH + EN, b""),
        ("utf-8", EN, b""),
        ("utf-8", ZH, b"\xef\xbb\xbf"),  # UTF-8 with BOM
        ("utf-16-le", ZH + EN, b"\xff\xfe"),
        ("utf-16-be", ZH + EN, b"\xfe\xff"),
        ("utf-16-le", EN, b""),  # no BOM, ASCII-range text
        ("utf-16-be", EN, b""),
        ("gb18030", ZH, b""),
        ("gbk", ZH, b""),
        ("gb2312", ZH, b""),
        ("big5", ZH_TRADITIONAL, b""),
    ],
)
def test_text_encodings(tmp_path: Path, encoding: str, text: str, prefix: bytes) -> None:
    path = tmp_path / f"doc-{encoding}.txt"
    path.write_bytes(prefix + text.encode(encoding))
    doc = load_document(path)
    assert len(doc.sections) == 1
    assert doc.sections[0].text == text  # BOM removed, nothing garbled
    assert doc.sections[0].page is None
    assert doc.warnings == []


def test_gb18030_only_characters(tmp_path: Path) -> None:
    # characters outside GBK (CJK Extension A, the euro sign) only exist in GB18030
    text = ZH + "㐀㐁㐂 €"
    path = tmp_path / "ext.txt"
    path.write_bytes(text.encode("gb18030"))
    assert text_of(path) == text


def test_utf16_shared_sample(shared_eval: Path) -> None:
    text = text_of(shared_eval / "office" / "unstructured_fake-text-utf-16.txt")
    assert "This is a test document to use for unit tests." in text
    assert "Doylestown, PA 18901" in text
    assert "\x00" not in text and "\ufffd" not in text


@pytest.mark.parametrize("suffix", [".txt", ".text", ".md", ".markdown", ".TXT", ".Md"])
def test_text_extensions(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"note{suffix}"
    path.write_text("# 标题\n\n正文", encoding="utf-8")
    assert text_of(path) == "# 标题\n\n正文"


def test_supported_extensions() -> None:
    exts = supported_extensions()
    assert {".txt", ".md", ".pdf"} <= set(exts)
    assert exts == sorted(exts)
    assert is_supported(Path("a/B.PDF"))
    assert not is_supported(Path("a/b.xyz"))


# --- errors --------------------------------------------------------------------------------------


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(EmptyDocumentError) as info:
        load_document(path)
    assert info.value.path == str(path)
    assert "empty" in info.value.reason


def test_whitespace_only_file(tmp_path: Path) -> None:
    path = tmp_path / "blank.md"
    path.write_text(" \n\n\t \u3000\n", encoding="utf-8")
    with pytest.raises(EmptyDocumentError):
        load_document(path)


def test_empty_pdf_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.pdf"
    path.write_bytes(b"")
    with pytest.raises(EmptyDocumentError):
        load_document(path)


@pytest.mark.parametrize(
    "data",
    [
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8,
        b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(1000),
        bytes(range(256)) * 16,
    ],
    ids=["png", "zip", "all-bytes"],
)
def test_binary_renamed_txt(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "picture.txt"
    path.write_bytes(data)
    with pytest.raises(DocumentLoadError) as info:
        load_document(path)
    assert not isinstance(info.value, UnsupportedFileTypeError)
    assert info.value.path == str(path)
    assert "binary" in info.value.reason


def test_not_a_pdf_renamed_pdf(tmp_path: Path) -> None:
    path = tmp_path / "fake.pdf"
    path.write_text("this is not a PDF at all", encoding="utf-8")
    with pytest.raises(DocumentLoadError) as info:
        load_document(path)
    assert info.value.path == str(path)


def test_truncated_pdf(tmp_path: Path) -> None:
    full = make_pdf(tmp_path / "full.pdf", ["Hello truncated world"]).read_bytes()
    path = tmp_path / "truncated.pdf"
    path.write_bytes(full[: len(full) // 3])
    try:
        text = text_of(path)
    except DocumentLoadError:
        return
    assert isinstance(text, str)


@pytest.mark.parametrize("name", ["data.xyz", "archive.tar.gz", "Makefile", "image.bmp"])  # .png: OCR (issue 12)
def test_unknown_extension(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("hello", encoding="utf-8")
    with pytest.raises(UnsupportedFileTypeError) as info:
        load_document(path)
    assert "unsupported file type" in info.value.reason
    assert ".txt" in info.value.hint  # the hint lists what is supported


def test_unknown_extension_without_suffix_says_none(tmp_path: Path) -> None:
    path = tmp_path / "README"
    path.write_text("hello", encoding="utf-8")
    with pytest.raises(UnsupportedFileTypeError, match=re.escape("(none)")):
        load_document(path)


# --- generated PDFs ------------------------------------------------------------------------------


def test_generated_pdf_pages(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "two.pdf", ["First page text\nsecond line", "Second page words"])
    doc = load_document(path)
    assert [s.page for s in doc.sections] == [1, 2]
    assert words(doc.sections[0].text) == ["First", "page", "text", "second", "line"]
    assert words(doc.sections[1].text) == ["Second", "page", "words"]
    assert all(s.layout_breaks for s in doc.sections)
    assert doc.warnings == []


def test_pdf_pages_without_text_are_reported(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "mixed.pdf", ["Page one", "", "", "Page four", ""])
    doc = load_document(path)
    assert [s.page for s in doc.sections] == [1, 4]
    assert len(doc.warnings) == 1
    assert "3 page(s) without a text layer" in doc.warnings[0]
    assert "2-3, 5" in doc.warnings[0]


def test_pdf_without_any_text(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "blank.pdf", ["", ""])
    with pytest.raises(EmptyDocumentError) as info:
        load_document(path)
    assert "without a text layer" in info.value.hint


# --- shared tricky PDFs --------------------------------------------------------------------------


def test_crazyones_matches_expected_text(shared_eval: Path) -> None:
    folder = shared_eval / "pdf_tricky"
    expected = (folder / "pypdf_crazyones.expected.txt").read_text(encoding="utf-8")
    doc = load_document(folder / "pypdf_crazyones.pdf")
    assert [s.page for s in doc.sections] == [1]
    assert words(doc.sections[0].text) == words(expected)


def test_encrypted_pdf_without_password(shared_eval: Path) -> None:
    path = shared_eval / "pdf_tricky" / "pypdf_encrypted-file_pw-test.pdf"
    with pytest.raises(EncryptedDocumentError) as info:
        load_document(path)
    assert "password" in info.value.hint


def test_encrypted_pdf_with_wrong_password(shared_eval: Path) -> None:
    path = shared_eval / "pdf_tricky" / "pypdf_encrypted-file_pw-test.pdf"
    with pytest.raises(EncryptedDocumentError, match="wrong password"):
        load_document(path, LoadOptions(password="not-the-password"))


def test_encrypted_pdf_with_password(shared_eval: Path) -> None:
    path = shared_eval / "pdf_tricky" / "pypdf_encrypted-file_pw-test.pdf"
    doc = load_document(path, LoadOptions(password="test"))
    assert doc.sections
    assert "Example" in doc.sections[0].text


def test_pdf_with_empty_password_opens(shared_eval: Path) -> None:
    text = text_of(shared_eval / "pdf_tricky" / "pypdf_r2-empty-password.pdf")
    assert "pdf encryption test" in text


def test_scanned_pdf_without_text_layer(shared_eval: Path) -> None:
    with pytest.raises(EmptyDocumentError) as info:
        load_document(shared_eval / "pdf_tricky" / "mineru_small_ocr_scanned_notext.pdf")
    assert "without a text layer" in info.value.hint
    assert "1-8" in info.value.hint


def test_chinese_pdf(shared_eval: Path) -> None:
    text = text_of(shared_eval / "docs" / "pdfjs_issue12823_zh.pdf")
    cjk = re.findall(r"[\u4e00-\u9fff]", text)
    assert len(cjk) >= 50
    assert "知识库" in text


def test_corrupted_pdf_loads_or_raises_load_error(shared_eval: Path) -> None:
    path = shared_eval / "pdf_tricky" / "pdfminer_zen_of_python_corrupted.pdf"
    try:
        text = text_of(path)
    except DocumentLoadError:
        return
    assert "Beautiful is better than ugly." in text
