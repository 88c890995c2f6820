"""Loaders for every format, encodings, and the whole shared corpus through the pipeline."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from langchain_core.embeddings import Embeddings

from ingest.loaders import decode_bytes, detect_encoding, load_document
from ingest.pipeline import ingest_paths
from ingest.store import KnowledgeBase, open_client
from rag_app.errors import DocumentLoadError, EmptyDocumentError
from tests.test_ingest_pipeline import contents, result, settings_for

REPO = Path(__file__).resolve().parent.parent
CJK = re.compile(r"[\u4e00-\u9fff]")


def sections(path: Path) -> list[tuple[str | None, int | None, str]]:
    return [(s.metadata.get("heading"), s.page, s.text) for s in load_document(path).sections]


# --- encodings: short texts are where detectors fail -------------------------------------------------

SHORT_SIMPLIFIED = ["你好", "中文测试", "今天天气很好。", "知识库问答系统", "价格：15元", "数据", "这是一个测试文件", "用户手册第一章"]
SHORT_TRADITIONAL = ["你好", "中文測試", "今天天氣很好。", "知識庫問答系統", "資料", "這是一個測試檔案", "使用者手冊第一章"]


@pytest.mark.parametrize("text", SHORT_SIMPLIFIED)
@pytest.mark.parametrize("encoding", ["gbk", "gb18030"])
def test_short_gbk_texts(tmp_path: Path, text: str, encoding: str) -> None:
    path = tmp_path / "short.txt"
    path.write_bytes(text.encode(encoding))
    assert load_document(path).sections[0].text == text


@pytest.mark.parametrize("text", SHORT_TRADITIONAL)
def test_short_big5_texts(tmp_path: Path, text: str) -> None:
    path = tmp_path / "short.txt"
    path.write_bytes(text.encode("big5"))
    assert load_document(path).sections[0].text == text


@pytest.mark.parametrize(
    ("text", "encoding"),
    [("Café crème brûlée", "cp1252"), ("naïve façade, déjà vu", "cp1252"), ("안녕하세요", "euc_kr")],
)
def test_other_legacy_encodings(text: str, encoding: str) -> None:
    assert decode_bytes(text.encode(encoding), Path("x.txt")) == text


def test_encoding_detected_from_a_sample_of_a_large_file(tmp_path: Path) -> None:
    text = "北京是首都，上海是最大的城市。" * 20000  # ~600 KB in GBK
    path = tmp_path / "big-gbk.txt"
    path.write_bytes(text.encode("gbk"))
    assert detect_encoding(path.read_bytes()[:65537]) == "gb18030"  # cut in the middle of a character
    assert load_document(path).sections[0].text == text


# --- markdown headings -------------------------------------------------------------------------------


def test_markdown_heading_path(tmp_path: Path) -> None:
    path = tmp_path / "手册.md"
    path.write_text(
        "前言。\n\n# 一级\n正文一。\n\n## 二级\n正文二。\n\n```\n# 代码里的注释\n```\n\n"
        "### 三级 ###\n正文三。\n\n# 另一个一级\n正文四。\n\nSetext\n======\n正文五。\n",
        encoding="utf-8",
    )
    got = [(h, t.splitlines()[-1]) for h, _, t in sections(path)]
    assert got == [
        (None, "前言。"),
        ("一级", "正文一。"),
        ("一级 > 二级", "```"),
        ("一级 > 二级 > 三级", "正文三。"),
        ("另一个一级", "正文四。"),
        ("Setext", "正文五。"),
    ]


def test_heading_path_reaches_chunk_metadata(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    folder = tmp_path / "md"
    folder.mkdir()
    (folder / "a.md").write_text("# 安装\n\n运行安装程序。\n\n## 命令行\n\n使用 rag ingest 导入文档。", encoding="utf-8")
    settings = settings_for(tmp_path / "data")
    ingest_paths(settings, [folder], embeddings=fake_embeddings)
    metas = {t: m for t, m in contents(KnowledgeBase(open_client(settings.data_dir), "default", fake_embeddings)).values()}
    by_heading = {m.get("heading"): t for t, m in metas.items()}
    assert "运行安装程序" in by_heading["安装"]
    assert "rag ingest" in by_heading["安装 > 命令行"]


# --- docx / pptx / epub / html / csv -----------------------------------------------------------------


def test_docx_paragraphs_tables_headings(tmp_path: Path) -> None:
    import docx

    document = docx.Document()
    document.add_heading("产品手册", level=1)
    document.add_paragraph("第一段正文。")
    document.add_heading("参数", level=2)
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "名称", "数值"
    table.cell(1, 0).text, table.cell(1, 1).text = "长度", "42"
    document.add_paragraph("表格之后的段落。")
    path = tmp_path / "manual.docx"
    document.save(str(path))
    got = sections(path)
    assert got[0][0] == "产品手册" and "第一段正文。" in got[0][2]
    assert got[1][0] == "产品手册 > 参数"
    assert "| 名称 | 数值 |\n|---|---|\n| 长度 | 42 |" in got[1][2]  # a Markdown table (issue 12)
    assert got[1][2].index("长度 | 42") < got[1][2].index("表格之后的段落。")


def test_pptx_one_section_per_slide(tmp_path: Path) -> None:
    from pptx import Presentation
    from pptx.util import Inches

    deck = Presentation()
    for i, (title, body) in enumerate([("第一页", "欢迎使用。"), ("第二页", "问答系统。")]):
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
        if i == 1:
            shape = slide.shapes.add_table(2, 2, Inches(1), Inches(4), Inches(4), Inches(1))
            shape.table.cell(0, 0).text, shape.table.cell(1, 1).text = "甲", "乙"
            slide.notes_slide.notes_text_frame.text = "演讲者备注"
    path = tmp_path / "deck.pptx"
    deck.save(str(path))
    got = sections(path)
    assert [(h, p) for h, p, _ in got] == [("第一页", 1), ("第二页", 2)]
    assert "欢迎使用。" in got[0][2]
    assert "问答系统。" in got[1][2] and "甲" in got[1][2] and "乙" in got[1][2] and "演讲者备注" in got[1][2]


def test_epub_chapters(tmp_path: Path) -> None:
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("id1")
    book.set_title("书")
    book.set_language("zh")
    chapters = []
    for i, text in enumerate(["第一章的内容。", "第二章的内容。"], start=1):
        ch = epub.EpubHtml(title=f"第{i}章", file_name=f"c{i}.xhtml", lang="zh")
        ch.content = f"<html><body><h1>第{i}章</h1><p>{text}</p><script>var x=1;</script></body></html>"
        book.add_item(ch)
        chapters.append(ch)
    book.toc = chapters
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = chapters
    path = tmp_path / "book.epub"
    epub.write_epub(str(path), book)
    got = sections(path)
    assert [(h, p) for h, p, _ in got] == [("第1章", 1), ("第2章", 2)]
    assert "第二章的内容。" in got[1][2] and "var x" not in got[1][2]


HTML = """<!DOCTYPE html><html><head><meta charset="gbk"><title>标题</title>
<style>body {color: red}</style><script>alert("x")</script></head>
<body><nav><a href="/">首页</a> | <a href="/about">关于</a></nav>
<h1>知识库</h1><p>这是<b>加粗</b>的一段话。</p>
<h2>细节</h2><ul><li>第一项</li><li>第二项</li></ul>
<table><tr><th>名称</th><th>数值</th></tr><tr><td>长度</td><td>42</td></tr></table>
<div hidden>隐藏的文字</div><footer>版权所有</footer></body></html>"""


def test_html_visible_text_and_declared_charset(tmp_path: Path) -> None:
    path = tmp_path / "page.html"
    path.write_bytes(HTML.encode("gbk"))
    got = sections(path)
    text = "\n".join(t for _, _, t in got)
    assert "这是加粗的一段话。" in text
    assert "第一项\n\n第二项" in text and "| 名称 | 数值 |\n|---|---|\n| 长度 | 42 |" in text
    for boilerplate in ("alert", "color: red", "首页", "版权所有", "隐藏的文字"):
        assert boilerplate not in text
    assert [h for h, _, _ in got] == ["知识库", "知识库 > 细节"]


def test_html_cp1252_without_declaration(shared_eval: Path) -> None:
    text = "\n".join(t for _, _, t in sections(shared_eval / "office" / "unstructured_fake-html-cp1252.html"))
    assert "Die schöne Frau" in text and "15,50 €" in text and "El niño comió" in text
    assert "\ufffd" not in text


def test_csv_rows_with_headers(tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_bytes("姓名,城市,年龄\n张三,北京,30\n李四,上海,\n".encode("gbk"))
    (_, _, text), = sections(path)
    assert text == "姓名: 张三; 城市: 北京; 年龄: 30\n姓名: 李四; 城市: 上海"


def test_csv_semicolon_dialect(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("name;value\nalpha;1\nbeta;2\n", encoding="utf-8")
    assert sections(path)[0][2] == "name: alpha; value: 1\nname: beta; value: 2"


# --- the shared corpus: every file yields the right text or a named error --------------------------


def test_every_shared_file_through_the_pipeline(
    tmp_path: Path, shared_eval: Path, fake_embeddings: Embeddings
) -> None:
    # OCR off: the scanned PDF is reported as without the extra (tests/test_ocr.py reads it by OCR).
    settings = settings_for(tmp_path / "data", chunk_size=120, chunk_overlap=10, ocr="off")
    roots = [shared_eval / "docs", shared_eval / "pdf_tricky", shared_eval / "office"]
    report = ingest_paths(settings, roots, embeddings=fake_embeddings)
    assert len(report.files) == sum(1 for r in roots for p in r.iterdir() if p.is_file())
    kb = KnowledgeBase(open_client(settings.data_dir), "default", fake_embeddings)
    stored = contents(kb)
    text_of: dict[str, str] = {}
    for text, meta in sorted(stored.values(), key=lambda tm: (tm[1]["source"], tm[1]["chunk_index"])):
        text_of[meta["source"]] = text_of.get(meta["source"], "") + "\n" + text
    failed = {f.path: f.reason for f in report.failed}
    assert set(failed) == {
        "docs/pdfjs_XiaoBiaoSong_gbk_nonunicode.pdf",
        "pdf_tricky/mineru_small_ocr_scanned_notext.pdf",
        "pdf_tricky/pypdf_encrypted-file_pw-test.pdf",
    }
    assert "unreadable" in failed["docs/pdfjs_XiaoBiaoSong_gbk_nonunicode.pdf"]
    assert "without a text layer" in failed["pdf_tricky/mineru_small_ocr_scanned_notext.pdf"]
    assert "1-8" in failed["pdf_tricky/mineru_small_ocr_scanned_notext.pdf"]
    assert "encrypted" in failed["pdf_tricky/pypdf_encrypted-file_pw-test.pdf"]
    ok = {f.path for f in report.ok}
    assert ok | set(failed) == {f.path for f in report.files}
    # the right text
    expected = (shared_eval / "pdf_tricky" / "pypdf_crazyones.expected.txt").read_text(encoding="utf-8")
    crazy = text_of["pdf_tricky/pypdf_crazyones.pdf"]
    assert set(unicodedata.normalize("NFKC", expected).split()) == set(crazy.split())
    for source in ("docs/pdfjs_issue12823_zh.pdf", "docs/chatchat_ocr_test.pdf", "docs/chatchat_ocr_test.docx"):
        assert CJK.search(text_of[source]), source
    assert "知识库简介" in text_of["docs/pdfjs_issue12823_zh.pdf"]
    assert "Chinese" in text_of["pdf_tricky/pypdf_multilang.pdf"]
    assert "Doylestown, PA 18901" in text_of["office/unstructured_fake-text-utf-16.txt"]
    assert "Die schöne Frau" in text_of["office/unstructured_fake-html-cp1252.html"]
    assert "Header Col 1 | Header Col 2" in text_of["office/unstructured_docx-tables.docx"]
    assert "Beautiful is better than ugly." in text_of.get("pdf_tricky/pdfminer_zen_of_python_corrupted.pdf", "") or (
        "pdf_tricky/pdfminer_zen_of_python_corrupted.pdf" in failed
    )
    for source, text in text_of.items():
        assert "\ufffd" * 3 not in text, source
    # Kangxi radicals and compatibility forms never reach the store
    assert not re.search(r"[\u2f00-\u2fdf\uf900-\ufaff]", "".join(text_of.values()))


def test_encrypted_pdf_with_its_password_through_the_cli_setting(
    tmp_path: Path, shared_eval: Path, fake_embeddings: Embeddings
) -> None:
    # the password is in pypdf's own tests (tests/test_encryption.py: "test" for encrypted-file.pdf)
    settings = settings_for(tmp_path / "data", pdf_passwords={"pypdf_encrypted-file_pw-test.pdf": "test"})
    report = ingest_paths(settings, [shared_eval / "pdf_tricky" / "pypdf_encrypted-file_pw-test.pdf"], embeddings=fake_embeddings)
    assert result(report, "pypdf_encrypted-file_pw-test.pdf").status == "added"


# --- generated awkward files -----------------------------------------------------------------------


def test_awkward_file_names_and_contents(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    folder = tmp_path / "杂项"
    (folder / "子目录").mkdir(parents=True)
    (folder / "子目录" / "中文 名字 (1).txt").write_text("中文文件名也能导入。", encoding="utf-8")
    (folder / "odd..name...txt").write_text("Dots in the name.", encoding="utf-8")
    (folder / "empty.md").write_bytes(b"")
    (folder / "photo.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4)
    settings = settings_for(tmp_path / "data")
    # a path with '..' in it: sources are resolved, never '../something'
    report = ingest_paths(settings, [folder / "子目录" / ".."], embeddings=fake_embeddings)
    statuses = {f.path: f.status for f in report.files}
    assert statuses == {
        "杂项/子目录/中文 名字 (1).txt": "added",
        "杂项/odd..name...txt": "added",
        "杂项/empty.md": "failed",
        "杂项/photo.txt": "failed",
    }
    assert not any(s.startswith("..") for s in statuses)


def test_very_large_text_file(tmp_path: Path) -> None:
    """A 20 MB file is read, cleaned and split in bounded memory, measured in a fresh process (its peak RSS).

    Only load + clean + split: embedding and storing are batched (``ingest.embed_batch``) and measured in
    bench/ingest_bench.py. No timing assert.
    """
    paragraph = "检索增强生成把搜索和语言模型结合起来。" * 6 + "\n" + "Retrieval augmented generation. " * 6 + "\n\n"
    path = tmp_path / "big.txt"
    with path.open("w", encoding="utf-8") as fh:
        while fh.tell() < 20 * 1024 * 1024:
            fh.write(paragraph * 100)
    code = (
        "import resource, sys; from pathlib import Path; from ingest.embed import estimate_tokens;"
        "from ingest.pipeline import _Input, _load_and_split, _Splitting;"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss;"
        "chunks, _, _ = _load_and_split(_Input(Path(sys.argv[1]), 'big.txt'), '0' * 64,"
        " _Splitting('default', estimate_tokens, 200, 20, {}));"
        "text = ''.join(c.page_content for c in chunks[:3]);"
        "print(len(chunks), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base, text[:10])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    ).stdout.split()
    chunks, peak_kib, start = int(out[0]), int(out[1]), out[2]
    assert chunks > 30_000
    assert start == "检索增强生成把搜索和"
    assert peak_kib < 1_500_000, f"peak memory grew by {peak_kib / 1024:.0f} MiB for a 20 MB file"


def test_unknown_type_and_errors_do_not_stop_the_batch(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    folder = tmp_path / "mix"
    folder.mkdir()
    (folder / "good.txt").write_text("Good text.", encoding="utf-8")
    (folder / "broken.docx").write_bytes(b"PK\x03\x04 not really a zip")
    (folder / "broken.pptx").write_bytes(b"nothing")
    (folder / "broken.epub").write_bytes(b"nothing")
    (folder / "image.png").write_bytes(b"\x89PNG")
    report = ingest_paths(settings_for(tmp_path / "data"), [folder], embeddings=fake_embeddings)
    assert {f.path: f.status for f in report.files} == {
        "mix/good.txt": "added",
        "mix/broken.docx": "failed",
        "mix/broken.pptx": "failed",
        "mix/broken.epub": "failed",
        "mix/image.png": "skipped",
    }
    assert all(f.reason.startswith(f.path + ": ") for f in report.failed)


def test_whitespace_only_html_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "blank.html"
    path.write_text("<html><body><script>x()</script>  </body></html>", encoding="utf-8")
    with pytest.raises(EmptyDocumentError):
        load_document(path)


def test_garbage_pdf_raises_load_error(tmp_path: Path) -> None:
    path = tmp_path / "x.pdf"
    path.write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 10)
    with pytest.raises(DocumentLoadError):
        load_document(path)
