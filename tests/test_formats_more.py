""".odt, .xlsx and zip archives; headings travel with their chunks (issue 12)."""

from __future__ import annotations

import zipfile
from pathlib import Path

from langchain_core.embeddings import Embeddings

from ingest.loaders import load_document, supported_extensions
from ingest.pipeline import ingest_paths
from ingest.store import KnowledgeBase, open_client
from tests.test_ingest_pipeline import EN_TEXT, contents, settings_for


def make_odt(path: Path) -> Path:
    from odf.opendocument import OpenDocumentText
    from odf.table import Table, TableCell, TableColumn, TableRow
    from odf.text import H, P

    doc = OpenDocumentText()
    doc.text.addElement(H(outlinelevel=1, text="用户手册"))
    doc.text.addElement(P(text="第一章的正文。"))
    doc.text.addElement(H(outlinelevel=2, text="安装"))
    doc.text.addElement(P(text="运行安装程序。"))
    table = Table(name="参数")
    table.addElement(TableColumn(numbercolumnsrepeated=2))
    for cells in (["名称", "数值"], ["长度", "42"]):
        row = TableRow()
        for value in cells:
            cell = TableCell()
            cell.addElement(P(text=value))
            row.addElement(cell)
        table.addElement(row)
    doc.text.addElement(table)
    doc.save(str(path))
    return path


def test_odt_headings_paragraphs_and_tables(tmp_path: Path) -> None:
    assert ".odt" in supported_extensions() and ".xlsx" in supported_extensions()
    doc = load_document(make_odt(tmp_path / "manual.odt"))
    got = [(s.metadata.get("heading"), s.text) for s in doc.sections]
    assert got[0] == ("用户手册", "用户手册\n\n第一章的正文。")
    assert got[1][0] == "用户手册 > 安装"
    assert got[1][1] == "安装\n\n运行安装程序。\n\n| 名称 | 数值 |\n|---|---|\n| 长度 | 42 |"


def test_xlsx_one_section_per_sheet_named_as_heading(tmp_path: Path) -> None:
    from openpyxl import Workbook

    book = Workbook()
    first = book.active
    first.title = "Q1"
    first.append(["region", "sales"])
    first.append(["north", "=1+1"])  # a formula without a cached value: empty, not the formula text
    first.append(["south", 7])
    second = book.create_sheet("空表")
    second.append([None, None])
    book.save(tmp_path / "sales.xlsx")
    doc = load_document(tmp_path / "sales.xlsx")
    assert [(s.page, s.metadata["heading"]) for s in doc.sections] == [(1, "Q1")]
    assert doc.sections[0].text == "| region | sales |\n|---|---|\n| north |  |\n| south | 7 |"


def test_zip_loader_reads_members_for_a_summary(tmp_path: Path) -> None:
    path = tmp_path / "bundle.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a/readme.txt", EN_TEXT)
        archive.writestr("../escape.txt", "nope " * 20)
    doc = load_document(path)
    assert [s.metadata["member"] for s in doc.sections] == ["a/readme.txt"]
    assert any("unsafe member path" in w for w in doc.warnings)


def test_headings_travel_with_every_chunk(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    body = " ".join(f"Sentence number {i} explains one more detail of the setup." for i in range(40))
    (folder / "manual.md").write_text(f"# Manual\n\n## Setup\n\n{body}\n", encoding="utf-8")
    settings = settings_for(tmp_path / "data", chunk_size=60, chunk_overlap=5)
    ingest_paths(settings, [folder], embeddings=fake_embeddings)
    stored = contents(KnowledgeBase(open_client(settings.data_dir), "default", fake_embeddings))
    headings = [m.get("heading") for _, m in stored.values() if "Sentence number 30" in _ or "number 1 " in _]
    assert len(stored) > 3
    assert {m.get("heading") for t, m in stored.values() if "Sentence" in t} == {"Manual > Setup"}
    assert headings
