"""Tables become Markdown tables, kept whole in a chunk when they fit, header repeated when not (issue 12)."""

from __future__ import annotations

from pathlib import Path

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings

from ingest.loaders import load_document, markdown_table
from ingest.pipeline import ingest_paths
from ingest.split import split_documents
from ingest.store import KnowledgeBase, open_client
from tests.test_ingest_pipeline import contents, settings_for
from tests.test_loaders import write_pdf_objects


def count(text: str) -> int:
    return len(text.split()) + sum(1 for ch in text if "\u4e00" <= ch <= "\u9fff")


def test_markdown_table_shape() -> None:
    table = markdown_table([["名称", None, "a|b"], ["长度", "", 42.0], ["", "", ""], ["宽度\n(cm)", "", 3]])
    assert table == "| 名称 | a\\|b |\n|---|---|\n| 长度 | 42 |\n| 宽度 (cm) | 3 |"
    assert markdown_table([]) == ""


def test_small_table_stays_whole_in_one_chunk() -> None:
    table = markdown_table([["name", "value"], *[[f"item {i}", str(i)] for i in range(5)]])
    text = "Intro paragraph with a few words.\n\n" + table + "\n\nClosing words after the table."
    chunks = split_documents([Document(text, metadata={"source": "x"})], count, 60, 5)
    tables = [c for c in chunks if c.metadata.get("table")]
    assert [c.page_content for c in tables] == [table]
    assert text[tables[0].metadata["start_index"]:].startswith(table)


def test_large_table_repeats_its_header_in_every_chunk() -> None:
    rows = [["产品", "价格", "库存"], *[[f"产品{i}", f"{i * 10} 元", str(i)] for i in range(80)]]
    table = markdown_table(rows)
    chunks = split_documents([Document("前言。\n\n" + table, metadata={})], count, 50, 5)
    parts = [c.page_content for c in chunks if c.metadata.get("table")]
    assert len(parts) > 3
    for part in parts:
        assert part.startswith("| 产品 | 价格 | 库存 |\n|---|---|---|\n| 产品")
        assert count(part) <= 50
        assert all(line.startswith("|") for line in part.split("\n"))  # whole rows only
    body_rows = [line for part in parts for line in part.split("\n")[2:]]
    assert body_rows == table.split("\n")[2:]  # every row once, in order


def test_docx_xlsx_html_tables_reach_the_store_as_markdown(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    import docx
    from openpyxl import Workbook

    folder = tmp_path / "in"
    folder.mkdir()
    document = docx.Document()
    document.add_heading("参数", level=1)
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "名称", "数值"
    table.cell(1, 0).text, table.cell(1, 1).text = "长度", "42"
    document.save(str(folder / "spec.docx"))
    book = Workbook()
    sheet = book.active
    sheet.title = "价格表"
    for row in (["型号", "价格"], ["A1", 100], ["B2", 250.5]):
        sheet.append(row)
    book.save(folder / "prices.xlsx")
    (folder / "page.html").write_text(
        "<h1>Specs</h1><table><tr><th>Key</th><th>Value</th></tr><tr><td>Speed</td><td>fast</td></tr></table>",
        encoding="utf-8",
    )
    settings = settings_for(tmp_path / "data", chunk_size=120, chunk_overlap=10)
    report = ingest_paths(settings, [folder], embeddings=fake_embeddings)
    assert not report.failed, report.failed
    texts = {m["source"]: t for t, m in contents(KnowledgeBase(open_client(settings.data_dir), "default", fake_embeddings)).values()}
    assert "| 名称 | 数值 |\n|---|---|\n| 长度 | 42 |" in texts["in/spec.docx"]
    assert texts["in/prices.xlsx"] == "| 型号 | 价格 |\n|---|---|\n| A1 | 100 |\n| B2 | 250.5 |"
    assert "| Key | Value |\n|---|---|\n| Speed | fast |" in texts["in/page.html"]


def make_table_pdf(path: Path, rows: list[list[str]], intro: str = "Price list of the shop") -> Path:
    """A one-page PDF with a line of text and a ruled table (lines drawn, cell text placed)."""
    x0, top, width, height = 72, 680, 150, 24
    ops = ["BT", "/F1 12 Tf", f"72 720 Td ({intro}) Tj", "ET", "0.5 w"]
    n_rows, n_cols = len(rows), len(rows[0])
    for i in range(n_rows + 1):
        y = top - i * height
        ops.append(f"{x0} {y} m {x0 + n_cols * width} {y} l S")
    for j in range(n_cols + 1):
        x = x0 + j * width
        ops.append(f"{x} {top} m {x} {top - n_rows * height} l S")
    for i, row in enumerate(rows):
        for j, cell in enumerate(row):
            ops.append(f"BT /F1 11 Tf {x0 + j * width + 5} {top - (i + 1) * height + 8} Td ({cell}) Tj ET")
    stream = "\n".join(ops).encode("latin-1")
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [4 0 R] /Count 1 >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> /Contents 5 0 R >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    write_pdf_objects(path, objs)
    return path


def test_pdf_ruled_table_becomes_a_markdown_table(tmp_path: Path) -> None:
    rows = [["Product", "Price", "Stock"], ["Apple", "3 EUR", "12"], ["Pear", "4 EUR", "7"]]
    doc = load_document(make_table_pdf(tmp_path / "prices.pdf", rows))
    (page,) = doc.sections
    assert page.metadata.get("tables") is True
    assert "| Product | Price | Stock |\n|---|---|---|\n| Apple | 3 EUR | 12 |\n| Pear | 4 EUR | 7 |" in page.text
    assert page.text.index("Price list of the shop") < page.text.index("| Product")


def test_pdf_without_lines_keeps_pypdf_text(tmp_path: Path) -> None:
    from tests.test_loaders import make_pdf

    doc = load_document(make_pdf(tmp_path / "plain.pdf", ["Just prose | with a bar."]))
    assert "tables" not in doc.sections[0].metadata and "Just prose" in doc.sections[0].text
