"""Listing knowledge bases and re-ingesting unchanged files load nothing they do not need (issue 12).

``rag kb list`` and a no-op ``rag ingest`` read the data directory's manifest instead of opening Chroma, and
never import the embedder's libraries. Behavioural, not timed: which modules a real ``python -m rag_app.cli``
imports, that Chroma is not opened, and that what the manifest says is what Chroma would have said —
also for data directories written before the record existed, and whenever the manifest cannot vouch.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings

import ingest.embed as embed
import ingest.pipeline as pipeline
from ingest.documents import create_knowledge_base, delete_documents
from ingest.manifest import MANIFEST_FILE, DocumentRecord, Manifest
from ingest.pipeline import ProgressEvent, ingest_paths
from ingest.store import (
    KnowledgeBase,
    collection_name,
    knowledge_bases,
    list_knowledge_bases,
    open_client,
    recorded_knowledge_bases,
)
from rag_app.cli import cli
from rag_app.errors import EmbedderMismatchError
from rag_app.service import RagService
from rag_app.settings import EmbeddingSettings, Settings
from tests.test_ingest_pipeline import EN_TEXT, ZH_TEXT, settings_for, status_of

#: What a quiet command must not import: Chroma, the embedder's libraries, LangChain's runnables (LangSmith).
HEAVY = ("chromadb", "torch", "sentence_transformers", "transformers", "langsmith")
REPO = Path(__file__).resolve().parent.parent


def make_folder(root: Path, n: int = 6) -> Path:
    folder = root / "docs"
    folder.mkdir()
    for i in range(n):
        text = ZH_TEXT if i % 2 else EN_TEXT
        (folder / f"doc{i}.{'md' if i % 2 else 'txt'}").write_text(f"{text}\n\nNumber {i}.", encoding="utf-8")
    (folder / "copy.txt").write_text(f"{EN_TEXT}\n\nNumber 0.", encoding="utf-8")  # the same bytes as doc0.txt
    (folder / "notes.xyz").write_text("an unsupported file", encoding="utf-8")
    return folder


def chroma_says(data_dir: Path) -> list[Any]:
    return list_knowledge_bases(open_client(data_dir))


def forget_record(data_dir: Path) -> None:
    """Make the manifest look like one written before knowledge bases were recorded in it."""
    con = sqlite3.connect(data_dir / MANIFEST_FILE)
    con.execute("DROP TABLE knowledge_bases")
    con.execute("DELETE FROM meta WHERE key='catalog'")
    con.commit()
    con.close()


@pytest.fixture
def no_chroma(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fail any attempt of the pipeline or the listing to open Chroma; ``allow`` by clearing the list."""
    guard = ["closed"]
    real = open_client

    def guarded(*args: Any, **kwargs: Any) -> Any:
        if guard:
            pytest.fail("Chroma was opened")
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "open_client", guarded)
    monkeypatch.setattr("ingest.store.open_client", guarded)
    return guard


# --- the real command line, in a fresh interpreter ---------------------------------------------------


class _MiniLMStandIn(DeterministicFakeEmbedding):
    """Fake vectors recorded under the packaged MiniLM's identity, as the loaded model would record itself."""

    @property
    def identity(self) -> tuple[str, int]:
        return "all-MiniLM-L6-v2", self.size


def _imported_by(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``python -X importtime -m rag_app.cli ARGS``; return it and the modules it imported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "rag_app.cli", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    modules = {
        line.rsplit("|", 1)[1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }
    assert modules, proc.stderr[-2000:]
    return proc, modules


def test_kb_list_and_no_op_ingest_import_no_chroma_and_no_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_folder(tmp_path)
    data = tmp_path / "data"
    monkeypatch.setattr(embed, "build_embeddings", lambda *a, **k: _MiniLMStandIn(size=384))
    first = RagService(Settings.load(data_dir=data, ingest={"ocr": "off"})).ingest([folder])
    assert first.chunks_added > 0  # built "by MiniLM", the configured default embedder

    listed, modules = _imported_by(["--data-dir", str(data), "kb", "list"], tmp_path)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert listed.stdout == f"default\t{first.chunks_added} chunks\tall-MiniLM-L6-v2 (384 dimensions)\n"
    assert "rag_app.service" in modules  # the run is what it says
    assert not {m for m in modules if m.split(".")[0] in HEAVY}

    again, modules = _imported_by(["--data-dir", str(data), "ingest", "-q", str(folder)], tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"chunks: 0 added, {first.chunks_added} unchanged, 0 removed" in again.stdout
    assert "ingest.pipeline" in modules
    assert not {m for m in modules if m.split(".")[0] in HEAVY}


# --- no-op ingestion settles files from the manifest ---------------------------------------------------


def ingested(tmp_path: Path, embeddings: Embeddings, no_chroma: list[str]) -> tuple[Path, Settings, Any]:
    """A folder ingested once (Chroma allowed from now on: close ``no_chroma`` again to forbid it)."""
    folder = make_folder(tmp_path)
    settings = settings_for(tmp_path / "data")
    no_chroma.clear()
    return folder, settings, ingest_paths(settings, [folder], embeddings=embeddings)


def test_no_op_ingest_opens_no_chroma_and_reports_as_before(
    tmp_path: Path, fake_embeddings: Embeddings, no_chroma: list[str]
) -> None:
    folder, settings, first = ingested(tmp_path, fake_embeddings, no_chroma)
    no_chroma.append("closed")
    events: list[ProgressEvent] = []
    second = ingest_paths(settings, [folder], embeddings=fake_embeddings, progress=events.append)
    assert status_of(second) == {s: "unchanged" if st == "added" else st for s, st in status_of(first).items()}
    assert status_of(second)["docs/doc0.txt"] == "duplicate" and status_of(second)["docs/notes.xyz"] == "skipped"
    assert [f.chunks for f in second.files] == [f.chunks for f in first.files]
    assert second.chunks_unchanged == first.chunks_added and second.chunks_added == 0
    assert [e.stage for e in events] == ["start"] + ["file"] * len(first.files) + ["done"]


def test_a_changed_file_opens_chroma_after_the_settled_ones(
    tmp_path: Path, fake_embeddings: Embeddings, no_chroma: list[str]
) -> None:
    folder, settings, _ = ingested(tmp_path, fake_embeddings, no_chroma)
    (folder / "doc3.md").write_text(ZH_TEXT + "\n\n又加了一段话。", encoding="utf-8")
    (folder / "new.txt").write_text("A new file with a handful of words in it.", encoding="utf-8")
    events: list[ProgressEvent] = []
    second = ingest_paths(settings, [folder], embeddings=fake_embeddings, progress=events.append)
    statuses = status_of(second)
    assert statuses["docs/doc3.md"] == "replaced" and statuses["docs/new.txt"] == "added"
    assert statuses["docs/doc1.md"] == statuses["docs/doc5.md"] == "unchanged"
    assert [e.stage for e in events].count("start") == 1
    assert [e.files_done for e in events if e.stage == "file"] == list(range(1, len(second.files) + 1))
    expected = chroma_says(settings.data_dir)
    no_chroma.append("closed")
    assert knowledge_bases(settings.data_dir) == expected  # recorded by the writes, read without Chroma


def test_a_copy_settled_before_its_original_changes_is_indexed_again(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    """a-copy.txt (an alias of b.txt) is settled from the manifest; then b.txt turns out changed, its old
    content goes, and the copy is indexed under its own name in the same run, as before."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "b.txt").write_text(EN_TEXT, encoding="utf-8")
    settings = settings_for(tmp_path / "data")
    ingest_paths(settings, [folder], embeddings=fake_embeddings)
    (folder / "a-copy.txt").write_text(EN_TEXT, encoding="utf-8")
    assert status_of(ingest_paths(settings, [folder], embeddings=fake_embeddings))["docs/a-copy.txt"] == "duplicate"
    (folder / "b.txt").write_text(EN_TEXT + "\n\nChanged.", encoding="utf-8")
    third = ingest_paths(settings, [folder], embeddings=fake_embeddings)
    assert status_of(third) == {"docs/a-copy.txt": "added", "docs/b.txt": "replaced"}
    records = {r.source: r for r in Manifest(settings.data_dir).records(collection_name("default"))}
    assert not records["docs/a-copy.txt"].is_alias and records["docs/a-copy.txt"].chunks > 0


def test_another_embedder_is_still_refused_on_a_no_op(tmp_path: Path, no_chroma: list[str]) -> None:
    folder = make_folder(tmp_path)
    settings = settings_for(tmp_path / "data")
    no_chroma.clear()
    ingest_paths(settings, [folder], embeddings=DeterministicFakeEmbedding(size=16))
    with pytest.raises(EmbedderMismatchError, match="16 dimensions"):
        ingest_paths(settings, [folder], embeddings=DeterministicFakeEmbedding(size=8))


def test_no_op_of_the_configured_embedder_checks_its_folder_identity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_chroma: list[str]
) -> None:
    """Through the service the embedder is not even made: its folder says who it is."""
    folder = make_folder(tmp_path)
    made: list[str] = []

    def fake_build(settings: EmbeddingSettings, cache_dir: Path | None = None) -> Embeddings:
        made.append("model")
        return _MiniLMStandIn(size=384)

    monkeypatch.setattr(embed, "build_embeddings", fake_build)
    settings = Settings.load(data_dir=tmp_path / "data", ingest={"ocr": "off"})
    no_chroma.clear()
    RagService(settings).ingest([folder])
    no_chroma.append("closed")
    report = RagService(settings).ingest([folder])
    assert {f.status for f in report.files} == {"unchanged", "duplicate", "skipped"}
    assert made == ["model"]
    no_chroma.clear()
    other = tmp_path / "other-model"
    other.mkdir()  # a folder that cannot say what it is: the model is made and the knowledge base checks it
    monkeypatch.setattr(embed, "build_embeddings", lambda *a, **k: DeterministicFakeEmbedding(size=8))
    with pytest.raises(EmbedderMismatchError, match="'all-MiniLM-L6-v2' \\(384 dimensions\\)"):
        RagService(Settings.load(data_dir=tmp_path / "data", embedding={"model_path": str(other)})).ingest([folder])


# --- listing: what Chroma would say, or Chroma itself ---------------------------------------------------


def test_listing_from_the_manifest_matches_chroma(tmp_path: Path, fake_embeddings: Embeddings, no_chroma: list[str]) -> None:
    folder = make_folder(tmp_path)
    settings = settings_for(tmp_path / "data")
    no_chroma.clear()
    for kb in ("default", "产品手册"):
        ingest_paths(settings, [folder], embeddings=fake_embeddings, knowledge_base=kb)
    create_knowledge_base(settings, "empty one")
    delete_documents(settings, "产品手册", ["doc1.md"])
    expected = chroma_says(settings.data_dir)
    no_chroma.append("closed")
    assert knowledge_bases(settings.data_dir) == expected
    fake = "DeterministicFakeEmbedding (32 dimensions)"
    assert [(kb.name, kb.embedder) for kb in expected] == [("default", fake), ("empty one", None), ("产品手册", fake)]
    result = CliRunner().invoke(cli, ["--data-dir", str(settings.data_dir), "kb", "list"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1] == "empty one\t0 chunks\tembedder not recorded"


def test_an_old_data_dir_lists_from_chroma_then_gets_its_record(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    """A data directory written before this change (no record in its manifest) lists as before, from Chroma;
    its next ingestion, even a no-op, records it, and listing reads the manifest from then on."""
    folder = make_folder(tmp_path)
    settings = settings_for(tmp_path / "data")
    ingest_paths(settings, [folder], embeddings=fake_embeddings, knowledge_base="手册")
    forget_record(settings.data_dir)
    expected = chroma_says(settings.data_dir)
    assert recorded_knowledge_bases(settings.data_dir) is None
    result = CliRunner().invoke(cli, ["--data-dir", str(settings.data_dir), "kb", "list"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"手册\t{expected[0].chunks} chunks\tDeterministicFakeEmbedding (32 dimensions)\n"
    again = ingest_paths(settings, [folder], embeddings=fake_embeddings, knowledge_base="手册")
    assert {f.status for f in again.files} == {"unchanged", "duplicate", "skipped"}
    assert recorded_knowledge_bases(settings.data_dir) is not None
    assert knowledge_bases(settings.data_dir) == expected


def test_a_data_dir_from_before_the_manifest_lists_chromas_counts(tmp_path: Path) -> None:
    """Chunks in Chroma that no manifest row describes (written before the manifest): Chroma's count."""
    data = tmp_path / "data"
    client = open_client(data)
    legacy = client.create_collection(collection_name("old"), metadata={"hnsw:space": "cosine", "display_name": "old"})
    legacy.add(ids=["x-0", "x-1"], embeddings=[[0.5] * 8] * 2, documents=["旧的", "文档"], metadatas=[{"source": "x"}] * 2)
    create_knowledge_base(Settings.load(data_dir=data), "new")  # records both, "old" with 2 chunks and no rows
    assert recorded_knowledge_bases(data) is None  # 2 chunks recorded, none in the documents: not trusted
    assert [(kb.name, kb.chunks) for kb in knowledge_bases(data)] == [("new", 0), ("old", 2)]


def test_what_the_manifest_cannot_vouch_for_is_asked_of_chroma(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    folder = make_folder(tmp_path)
    settings = settings_for(tmp_path / "data")
    data = settings.data_dir
    for kb in ("a", "b"):
        ingest_paths(settings, [folder], embeddings=fake_embeddings, knowledge_base=kb)
    assert recorded_knowledge_bases(data) is not None

    # a writer's work unfinished (or a crash): chunks in Chroma whose document is still pending
    kb = KnowledgeBase(open_client(data), "a", fake_embeddings)
    assert kb.manifest is not None
    kb.manifest.begin(kb.collection_name, [DocumentRecord("docs/late.txt", "f" * 64, "pending", 1)])
    kb.add_chunks([Document(page_content="late", metadata={"source": "docs/late.txt", "sha256": "f" * 64})],
                  ["f" * 32 + "-00000"], batch_size=8)
    assert recorded_knowledge_bases(data) is None
    assert knowledge_bases(data) == chroma_says(data)  # the pending chunk counted, as Chroma counts it
    ingest_paths(settings, [folder], embeddings=fake_embeddings, knowledge_base="a")  # recovers
    assert recorded_knowledge_bases(data) is not None

    # a collection dropped behind the manifest's back
    open_client(data).delete_collection(collection_name("b"))
    assert recorded_knowledge_bases(data) is None
    assert [kb.name for kb in knowledge_bases(data)] == ["a"]

    # an unreadable manifest: listing works as it did (Chroma alone)
    (data / MANIFEST_FILE).write_bytes(b"not a database at all" * 100)
    for suffix in ("-wal", "-shm"):
        (data / (MANIFEST_FILE + suffix)).unlink(missing_ok=True)
    assert knowledge_bases(data) == chroma_says(data)


def test_listing_an_empty_data_dir_creates_nothing(tmp_path: Path, no_chroma: list[str]) -> None:
    result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path / "data"), "kb", "list"])
    assert result.exit_code == 0, result.output
    assert "No knowledge bases yet" in result.stdout
    assert not (tmp_path / "data").exists()
