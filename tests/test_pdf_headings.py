"""PDF heading paths (issue 12): from the outline, else from font sizes; conservative about both."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings

from ingest.loaders import load_document
from ingest.loaders.base import Section
from ingest.loaders.pdf_headings import Mark, PageLayout, extract_page, split_at_headings
from ingest.pipeline import ingest_paths
from ingest.store import KnowledgeBase, open_client
from rag_app.prompting import format_context
from tests.test_ingest_pipeline import contents, settings_for
from tests.test_loaders import pdf_string, write_helvetica_pdf, write_pdf_objects

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "pdf_headings_no_outline.pdf"
BODY = 11.0

Line = tuple[float, str] | tuple[float, str, float]  # (font size, text[, left x])


def sized_pdf(path: Path, pages: list[list[Line]]) -> Path:
    """Helvetica lines from the top of each page down, each at its own size (and x, default 72)."""
    streams: list[bytes] = []
    for lines in pages:
        ops = ["BT"]
        y = 770.0
        for size, text, *x in lines:
            y -= 1.6 * size
            ops += [f"/F1 {size} Tf", f"1 0 0 1 {x[0] if x else 72} {y:.1f} Tm", f"({pdf_string(text)}) Tj"]
        ops.append("ET")
        streams.append("\n".join(ops).encode("latin-1"))
    return write_helvetica_pdf(path, streams)


def body(words: str, lines: int = 3) -> list[Line]:
    return [(BODY, f"{words} sentence {i} of the body text, set in the body size like all prose.") for i in range(lines)]


def headings(path: Path) -> list[tuple[int | None, str | None, str]]:
    """(page, heading path, first line) per section."""
    return [(s.page, s.metadata.get("heading"), s.text.strip().split("\n")[0]) for s in load_document(path).sections]


def chunk_headings(folder: Path, tmp_path: Path, embeddings: Embeddings, **ingest: Any) -> list[tuple[str, dict]]:
    settings = settings_for(tmp_path / "data", **ingest)
    report = ingest_paths(settings, [folder], embeddings=embeddings)
    assert not report.failed, report.summary()
    return list(contents(KnowledgeBase(open_client(settings.data_dir), "default", embeddings)).values())


# --- outline ---------------------------------------------------------------------------------------


def outlined_pdf(folder: Path) -> Path:
    """Three pages of body-size text (no font-size headings), then an outline added with pypdf:
    "Introduction" (matched by its line), nested "Scope" (found by its top coordinate only),
    "Installation" (its line reads "2 Installation"), nested "Requirements" (whole page 3)."""
    from pypdf import PdfWriter
    from pypdf.generic import Fit

    plain = sized_pdf(
        folder / "plain.pdf",
        [
            [(BODY, "Introduction"), *body("Opening"), (BODY, "Why this guide exists"), *body("Scope")],
            [*body("Carried"), (BODY, "2 Installation"), *body("Install")],
            body("Require"),
        ],
    )
    # the line "Why this guide exists" is the 5th on page 1: baseline 770 - 5 * 1.6 * 11 = 682
    writer = PdfWriter(clone_from=plain)
    intro = writer.add_outline_item(title="Introduction", page_number=0)
    writer.add_outline_item(title="Scope", page_number=0, parent=intro, fit=Fit.xyz(top=690))
    install = writer.add_outline_item(title="Installation", page_number=1)
    writer.add_outline_item(title="Requirements", page_number=2, parent=install)
    path = folder / "manual.pdf"
    writer.write(path)
    plain.unlink()
    return path


def test_outline_gives_heading_paths_per_section(tmp_path: Path) -> None:
    got = headings(outlined_pdf(tmp_path))
    assert got == [
        (1, "Introduction", "Introduction"),
        (1, "Introduction > Scope", "Why this guide exists"),
        (2, "Introduction > Scope", "Carried sentence 0 of the body text, set in the body size like all prose."),
        (2, "Installation", "2 Installation"),
        (3, "Installation > Requirements", "Require sentence 0 of the body text, set in the body size like all prose."),
    ]


def test_outline_heading_paths_reach_every_chunk(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    outlined_pdf(folder)
    chunks = chunk_headings(folder, tmp_path, fake_embeddings, chunk_size=30, chunk_overlap=0)
    by_word: dict[str, set[str | None]] = {}
    for text, meta in chunks:
        for word in ("Opening", "Scope", "Carried", "Install", "Require"):
            if f"{word} sentence" in text:
                by_word.setdefault(word, set()).add(meta.get("heading"))
    assert by_word == {
        "Opening": {"Introduction"},
        "Scope": {"Introduction > Scope"},
        "Carried": {"Introduction > Scope"},
        "Install": {"Installation"},
        "Require": {"Installation > Requirements"},
    }
    assert len(chunks) > 5  # several chunks per section: every one carries the path


# --- font sizes --------------------------------------------------------------------------------------


def test_font_sizes_give_levels_and_skip_the_title_block(tmp_path: Path) -> None:
    path = sized_pdf(
        tmp_path / "report.pdf",
        [
            [
                (20, "Annual Report", 200),
                (13, "March 3, 2024", 230),  # the date under the title: 13 pt is also the level-3 size
                *body("Summary"),
                (14, "Results"),
                *body("Results"),
                (14, "Risks and mitigations for the"),  # a heading wrapped onto two lines
                (14, "coming year"),
                *body("Risks"),
            ],
            [(13, "Supply chain"), *body("Supply"), (14, "Outlook"), *body("Outlook")],
        ],
    )
    assert [(p, h) for p, h, _ in headings(path)] == [
        (1, "Annual Report"),
        (1, "Annual Report > Results"),
        (1, "Annual Report > Risks and mitigations for the coming year"),
        (2, "Annual Report > Risks and mitigations for the coming year > Supply chain"),
        (2, "Annual Report > Outlook"),
    ]


def test_large_text_that_is_not_a_heading(tmp_path: Path) -> None:
    """A running header in a large size, a pull quote of three large lines, a large sentence, a large
    page number: none is a heading, so the document gets no heading at all."""
    quote = [(16, "Quality is never an accident"), (16, "it is always the result of"), (16, "intelligent effort")]
    pages = [
        [(15, "ACME Handbook"), *body("First"), *quote, *body("After")],
        [(15, "ACME Handbook"), *body("Second"), (15, "This line is large but ends like a sentence."), *body("Tail")],
        [(15, "ACME Handbook"), *body("Third"), (18, "42")],
    ]
    got = headings(sized_pdf(tmp_path / "handbook.pdf", pages))
    assert [p for p, _, _ in got] == [1, 2, 3]
    assert {h for _, h, _ in got} == {None}


def test_uniform_text_has_no_headings(tmp_path: Path) -> None:
    got = headings(sized_pdf(tmp_path / "plain.pdf", [body("Only", 6), body("More", 6)]))
    assert {h for _, h, _ in got} == {None}


def test_fixture_made_by_libreoffice_from_word_heading_styles() -> None:
    """Word's Heading 1 (14 pt) and Heading 2 (13 pt) over 11 pt text; Heading 3 is bold 11 pt, body
    size, so it stays body text (no heading is better than a guess)."""
    assert headings(FIXTURE) == [
        (1, "产品手册", "产品手册"),
        (1, "产品手册 > 安装", "安装"),
        (2, "产品手册 > Configuration", "Configuration"),
    ]


def test_headings_through_the_pipeline_into_chunks_and_the_prompt_label(
    tmp_path: Path, fake_embeddings: Embeddings
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(FIXTURE, folder / "manual.pdf")
    chunks = chunk_headings(folder, tmp_path, fake_embeddings)
    install = [meta for text, meta in chunks if "运行安装程序" in text]
    ocr = [meta for text, meta in chunks if "扫描版" in text]
    assert install and {m["heading"] for m in install} == {"产品手册 > 安装"}
    assert ocr and {m["heading"] for m in ocr} == {"产品手册 > Configuration"}
    text, meta = next((t, m) for t, m in chunks if "运行安装程序" in t)
    label = format_context([Document(page_content=text, metadata=meta)]).split("\n")[0]
    assert label == "[1] (in/manual.pdf:1 — 产品手册 > 安装)"


def test_the_hit_test_and_the_chunk_browser_show_the_section(tmp_path: Path) -> None:
    """What the app's Search page and chunk browser (and the server's routes) get from the service."""
    from rag_app.service import RagService

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(FIXTURE, folder / "manual.pdf")
    service = RagService(settings_for(tmp_path / "data"))
    service.ingest([folder])
    rows = service.chunks("in/manual.pdf")
    assert {r["heading"] for r in rows if "运行安装程序" in r["text"]} == {"产品手册 > 安装"}
    found = service.search("运行安装程序 安装目录")["results"]
    assert found and all("heading" in r for r in found)
    assert {r["heading"] for r in found if "运行安装程序" in r["text"]} == {"产品手册 > 安装"}


# --- placement -----------------------------------------------------------------------------------------


def test_headings_found_again_in_text_the_table_extractor_rewrote() -> None:
    """A page whose text pdfplumber replaced (tables) has other offsets: the heading line is found again."""
    layout = PageLayout(1, "Intro text\nResults\nbody")
    marks = [Mark(1, 0, 1, "Report", "Intro text"), Mark(1, 11, 2, "Results", "Results")]
    rewritten = Section(text="Intro  text\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\nResults\nmore body", page=1)
    out = split_at_headings([rewritten], marks, {1: layout})
    assert [(s.metadata.get("heading"), s.text.split("\n")[0]) for s in out] == [
        ("Report", "Intro  text"),
        ("Report > Results", "Results"),
    ]


def test_a_heading_on_a_page_without_text_still_opens_its_chapter() -> None:
    """Outline entry "Chapter 2" points at a scanned page (no section): the next page is in chapter 2."""
    sections = [Section(text="one", page=1), Section(text="three", page=3)]
    marks = [Mark(1, 0, 1, "Chapter 1"), Mark(2, 0, 1, "Chapter 2"), Mark(2, 0, 2, "Scans")]
    out = split_at_headings(sections, marks, {})
    assert [(s.page, s.metadata.get("heading")) for s in out] == [(1, "Chapter 1"), (3, "Chapter 2 > Scans")]


def test_page_with_a_large_figure_keeps_its_text_without_positions(tmp_path: Path) -> None:
    """pypdf parses text-less forms (figures) only for a visitor; a big one is read the cheap way."""
    from pypdf import PdfReader

    strokes = "\n".join(f"{i % 500} {i % 700} m {(i * 7) % 500} {(i * 3) % 700} l S" for i in range(3000)).encode()
    text = b"BT /F1 12 Tf 72 720 Td (Text beside a big figure.) Tj ET /Fm1 Do"
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [4 0 R] /Count 1 >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 3 0 R >> /XObject << /Fm1 6 0 R >> >> /Contents 5 0 R >>",
        b"<< /Length %d >>\nstream\n" % len(text) + text + b"\nendstream",
        b"<< /Type /XObject /Subtype /Form /BBox [0 0 612 792] /Resources << /ExtGState << >> >> "
        b"/Length %d >>\nstream\n" % len(strokes) + strokes + b"\nendstream",
    ]
    path = tmp_path / "figure.pdf"
    write_pdf_objects(path, objs)
    page = PdfReader(path).pages[0]
    layout = extract_page(page, 1)
    assert layout.text == PdfReader(path).pages[0].extract_text()
    assert "Text beside a big figure." in layout.text and layout.lines == []


# --- end to end ----------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_pdf_headings_with_real_embedder_and_store(tmp_path: Path, real_embeddings: Any) -> None:
    """Real MiniLM embedder, persistent Chroma, the real pipeline: the retrieved chunk carries its
    heading path and the prompt's source line shows it."""
    from rag_app.service import RagService
    from rag_app.settings import Settings

    folder = tmp_path / "docs"
    folder.mkdir()
    shutil.copy(FIXTURE, folder / "manual.pdf")
    service = RagService(Settings.load(data_dir=tmp_path / "data", llm={"backend": "fake"}), embeddings=real_embeddings)
    report = service.ingest([folder])
    assert not report.failed, report.summary()
    found = service.retriever().invoke("Where do the settings live? rag_settings.toml retrieval section")
    top = next(d for d in found if "rag_settings.toml" in d.page_content)
    assert top.metadata["heading"] == "产品手册 > Configuration" and top.metadata["page"] == 2
    assert format_context([top]).startswith("[1] (docs/manual.pdf:2 — 产品手册 > Configuration)\n")
