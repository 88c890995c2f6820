"""What PDF heading paths cost and what they find (issue 12): per page, pypdf's plain ``extract_text`` against
the loader's extraction with text positions (``pdf_headings.extract_page``), plus finding the headings
(outline or font sizes) and cutting the pages at them; and the heading paths each PDF gets.

Run: ``.venv/bin/python bench/pdf_headings.py [--runs 25] [PDF ...]`` (default: the repo's sample guide, the
heading fixture and every PDF under ../shared/eval). Medians of CPU time (``process_time``), both ways
interleaved, so other load on the machine shifts them alike. Prints one JSON object per PDF.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from pypdf import PdfReader

from ingest.loaders import LoadOptions, load_document
from ingest.loaders.base import Section
from ingest.loaders.pdf_headings import extract_page, font_marks, outline_marks, split_at_headings
from rag_app.errors import DocumentLoadError

REPO = Path(__file__).resolve().parent.parent
DEFAULT = [
    REPO / "samples" / "guide" / "user-guide.zh.pdf",
    REPO / "tests" / "fixtures" / "pdf_headings_no_outline.pdf",
    *sorted((REPO.parent / "shared" / "eval").glob("**/*.pdf")),
]
PASSWORDS = {"pypdf_encrypted-file_pw-test.pdf": "test"}


def _reader(path: Path) -> PdfReader:
    reader = PdfReader(path)
    if reader.is_encrypted:
        reader.decrypt(PASSWORDS.get(path.name, ""))
    return reader


def measure(path: Path, runs: int) -> dict[str, object]:
    plain: list[float] = []
    positions: list[float] = []
    headings: list[float] = []
    for _ in range(runs):
        reader = _reader(path)
        start = time.process_time()
        for page in reader.pages:
            page.extract_text()
        plain.append(time.process_time() - start)
        reader = _reader(path)
        start = time.process_time()
        layouts = [extract_page(page, number) for number, page in enumerate(reader.pages, start=1)]
        positions.append(time.process_time() - start)
        start = time.process_time()
        by_page = {layout.number: layout for layout in layouts if layout.text.strip()}
        marks = outline_marks(reader, by_page) or font_marks(list(by_page.values()))
        split_at_headings([Section(layout.text, layout.number) for layout in by_page.values()], marks, by_page)
        headings.append(time.process_time() - start)
    pages = len(reader.pages)

    def ms(values: list[float]) -> float:
        return round(1000 * statistics.median(values) / pages, 2)

    try:
        sections = load_document(path, LoadOptions(password=PASSWORDS.get(path.name))).sections
        paths = list(dict.fromkeys(f"p{s.page}: {s.metadata.get('heading')}" for s in sections))
    except DocumentLoadError as exc:
        paths = [f"not loaded: {exc.reason}"]
    return {
        "pdf": path.name,
        "pages": pages,
        "ms_per_page_extract_text": ms(plain),
        "ms_per_page_with_positions": ms(positions),
        "ms_per_page_headings": ms(headings),
        "ms_per_page_extra": round(ms(positions) - ms(plain) + ms(headings), 2),
        "heading_paths": paths,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("pdfs", nargs="*", type=Path)
    parser.add_argument("--runs", type=int, default=25)
    args = parser.parse_args()
    for path in args.pdfs or [p for p in DEFAULT if p.exists()]:
        sys.stdout.write(json.dumps(measure(path, args.runs), ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
