"""OCR of scanned PDF pages and images, offline (issue 12)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from langchain_core.embeddings import Embeddings

from ingest.loaders import LoadOptions, load_document
from ingest.loaders.images import OcrEngine, ocr_available, shipped_model_paths
from ingest.pipeline import ingest_paths
from ingest.store import KnowledgeBase, open_client
from tests.test_ingest_pipeline import contents, result, settings_for
from tests.test_loaders import make_pdf

CJK_FONT = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")
LINES = ["知识库问答系统", "Local document QA 2024"]


class FakeOcr:
    """Stands in for RapidOCR: numbers the pages it is given."""

    def __init__(self) -> None:
        self.calls = 0

    def read_text(self, image: Any) -> str:
        self.calls += 1
        return f"扫描的第{self.calls}页文字\nscanned text"


def test_scanned_pdf_pages_are_read_by_ocr_with_page_numbers(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "mixed.pdf", ["A page with a text layer.", "", ""])
    ocr = FakeOcr()
    doc = load_document(path, LoadOptions(ocr=ocr))
    assert [(s.page, s.metadata.get("ocr")) for s in doc.sections] == [(1, None), (2, True), (3, True)]
    assert doc.sections[1].text.startswith("扫描的第1页文字")
    assert any("2 page(s) without a text layer read by OCR: 2-3" in w for w in doc.warnings)


def test_without_ocr_scanned_pages_are_reported_as_before(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "mixed.pdf", ["A page with a text layer.", ""])
    doc = load_document(path, LoadOptions(ocr=None))
    assert len(doc.sections) == 1
    assert any("without a text layer (scanned?), not indexed: 2" in w for w in doc.warnings)


def test_ocr_setting_off_skips_images(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    report = ingest_paths(settings_for(tmp_path / "data", ocr="off"), [folder], embeddings=fake_embeddings)
    item = result(report, "in/photo.png")
    assert item.status == "skipped" and "without OCR" in item.reason


def test_the_models_ship_inside_the_wheel() -> None:
    if not ocr_available():
        pytest.skip("the 'ocr' extra is not installed")
    paths = shipped_model_paths()
    assert len(paths) == 3
    for path in paths.values():
        assert path.is_file() and "site-packages" in str(path) and path.stat().st_size > 100_000


def _text_image(path: Path) -> Path:
    from PIL import Image, ImageDraw, ImageFont

    if not CJK_FONT.is_file():
        pytest.skip("no CJK font to draw the test image")
    font = ImageFont.truetype(str(CJK_FONT), 40)
    image = Image.new("RGB", (720, 220), "white")
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(LINES):
        draw.text((30, 30 + 90 * i), line, fill="black", font=font)
    image.save(path)
    return path


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to reach the network (a model download) fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.e2e
def test_real_ocr_reads_chinese_and_english_offline(tmp_path: Path, no_network: None) -> None:
    if not ocr_available():
        pytest.skip("the 'ocr' extra is not installed")
    doc = load_document(_text_image(tmp_path / "sign.png"), LoadOptions(ocr=OcrEngine()))
    (section,) = doc.sections
    assert section.metadata == {"ocr": True}
    compact = section.text.replace(" ", "")
    assert "知识库问答系统" in compact and "Local" in section.text and "2024" in section.text


@pytest.mark.e2e
def test_real_ocr_of_a_scanned_pdf_through_the_pipeline(
    tmp_path: Path, fake_embeddings: Embeddings, no_network: None
) -> None:
    if not ocr_available():
        pytest.skip("the 'ocr' extra is not installed")
    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    Image.open(_text_image(tmp_path / "page.png")).save(folder / "scan.pdf")  # an image-only page
    settings = settings_for(tmp_path / "data", chunk_size=120)
    report = ingest_paths(settings, [folder], embeddings=fake_embeddings)
    item = result(report, "in/scan.pdf")
    assert item.status == "added" and item.pages == 1
    assert any("read by OCR: 1" in w for w in item.warnings)
    stored = contents(KnowledgeBase(open_client(settings.data_dir), "default", fake_embeddings))
    ((text, meta),) = stored.values()
    assert meta["ocr"] is True and meta["page"] == 1 and "知识库" in text
