"""End to end with the real parts: persistent Chroma in a temp folder, the real MiniLM embedder and the
real SmolLM2 GGUF through llama-cpp-python. Ingest real files, ask, check the answer and its sources."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from rag_app.service import RagService
from rag_app.settings import Settings
from tests.conftest import REPO

pytestmark = pytest.mark.e2e


@pytest.fixture
def service(tmp_path: Path, real_embeddings: Any, real_llm: Any) -> RagService:
    return RagService(Settings.load(data_dir=tmp_path / "data"), embeddings=real_embeddings, llm=real_llm)


def test_ingest_and_ask_with_real_models(service: RagService, shared_eval: Path, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("seed_langchain_doc.txt", "chatchat_大模型推理优化策略.md"):
        shutil.copy(shared_eval / "docs" / name, docs / name)
    shutil.copy(shared_eval / "pdf_tricky" / "pypdf_crazyones.pdf", docs / "pypdf_crazyones.pdf")

    report = service.ingest([docs])
    assert not report.failed, report.summary()
    assert {f.path for f in report.files} == {
        "docs/seed_langchain_doc.txt",
        "docs/chatchat_大模型推理优化策略.md",
        "docs/pypdf_crazyones.pdf",
    }
    assert report.chunks_added > 10

    chain = service.chain()
    result = chain.invoke("Here's to the crazy ones, the misfits, the rebels. Who sees them as genius?")
    assert result["answer"].strip()
    top = result["sources"][0]
    assert top["source"] == "docs/pypdf_crazyones.pdf" and top["page"] == 1
    assert top["label"] == "docs/pypdf_crazyones.pdf:1"
    assert "crazy" in top["snippet"].lower()

    # streaming: sources arrive before the answer, and the pieces add up to a non-empty answer
    keys: list[str] = []
    pieces: list[str] = []
    for chunk in chain.stream("Who are the crazy ones?"):
        keys.extend(chunk)
        pieces.extend([chunk["answer"]] if "answer" in chunk else [])
    assert keys.index("sources") < keys.index("answer")
    assert len(pieces) > 1 and "".join(pieces).strip()

    # re-ingesting the unchanged folder embeds nothing
    again = service.ingest([docs])
    assert again.chunks_added == 0 and {f.status for f in again.files} == {"unchanged"}


def test_sample_guide_answers_how_to_import(service: RagService) -> None:
    """The shipped sample collection (what `make run` ingests) answers the demo question."""
    report = service.ingest([REPO / "samples" / "guide"])
    assert not report.failed, report.summary()
    result = service.chain().invoke("How do I import documents?")
    assert result["answer"].strip()
    assert any(s["source"].endswith("user-guide.en.md") for s in result["sources"])


def test_cli_end_to_end(tmp_path: Path, shared_eval: Path) -> None:
    """The real `rag` command: ingest with a progress bar, then ask; real models, no fakes."""
    from click.testing import CliRunner

    from rag_app.cli import cli

    runner = CliRunner()
    data = str(tmp_path / "data")
    pdf = shared_eval / "pdf_tricky" / "pypdf_crazyones.pdf"
    bad = tmp_path / "broken.pdf"
    bad.write_bytes(b"%PDF-1.4 this is not really a pdf")
    result = runner.invoke(cli, ["--data-dir", data, "ingest", str(pdf), str(bad)])
    assert result.exit_code == 1, result.output
    assert "failed: broken.pdf:" in result.output
    assert "1 file(s) ok" in result.output

    result = runner.invoke(
        cli, ["--data-dir", data, "ask", "Who sees the crazy ones as genius?"],
        env={"RAG_LLM__MAX_NEW_TOKENS": "24", "RAG_LLM__N_CTX": "2048"},
    )
    assert result.exit_code == 0, result.output
    assert "Sources:" in result.output
    assert "[1] pypdf_crazyones.pdf:1" in result.output
