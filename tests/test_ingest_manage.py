"""Knowledge bases and documents: list, delete, prune, the duplicate rule, the CLI and its exit codes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from langchain_core.embeddings import Embeddings

from ingest.documents import create_knowledge_base, delete_documents, delete_knowledge_base, list_documents
from ingest.manifest import Manifest
from ingest.pipeline import file_sha256, ingest_paths
from ingest.store import KnowledgeBase, chunk_id, list_knowledge_bases, open_client
from rag_app.cli import cli
from rag_app.errors import DocumentNotFoundError, KnowledgeBaseExistsError, KnowledgeBaseNotFoundError
from tests.test_ingest_pipeline import EN_TEXT, contents, make_docs, result, settings_for, status_of


def kb_of(settings: object, embeddings: Embeddings, name: str = "default") -> KnowledgeBase:
    return KnowledgeBase(open_client(settings.data_dir), name, embeddings)  # type: ignore[attr-defined]


def sources_in(kb: KnowledgeBase) -> set[str]:
    return {m["source"] for _, m in contents(kb).values()}


def test_list_documents(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    folder = make_docs(tmp_path)
    settings = settings_for(tmp_path / "data")
    report = ingest_paths(settings, [folder], embeddings=fake_embeddings)
    docs = {d.source: d for d in list_documents(settings, "default")}
    assert set(docs) == {"docs/a.txt", "docs/c.pdf", "docs/sub/b.md"}
    for item in report.files:
        assert docs[item.path].chunks == item.chunks
        assert docs[item.path].sha256 == file_sha256(tmp_path / item.path)
        assert docs[item.path].ingested_at.startswith("20")
    assert docs["docs/c.pdf"].pages == 2
    with pytest.raises(KnowledgeBaseNotFoundError):
        list_documents(settings, "nope")


def test_delete_document_by_source_or_file_name(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    folder = make_docs(tmp_path)
    settings = settings_for(tmp_path / "data")
    ingest_paths(settings, [folder], embeddings=fake_embeddings)
    removal = delete_documents(settings, "default", ["b.md"])
    assert removal.sources == ["docs/sub/b.md"] and removal.chunks_removed > 0
    removal = delete_documents(settings, "default", ["docs/a.txt"])
    assert removal.sources == ["docs/a.txt"]
    kb = kb_of(settings, fake_embeddings)
    assert sources_in(kb) == {"docs/c.pdf"}
    assert [d.source for d in list_documents(settings, "default")] == ["docs/c.pdf"]
    with pytest.raises(DocumentNotFoundError):
        delete_documents(settings, "default", ["a.txt"])
    # deleted documents come back on the next ingestion
    report = ingest_paths(settings, [folder], embeddings=fake_embeddings)
    assert status_of(report) == {"docs/a.txt": "added", "docs/sub/b.md": "added", "docs/c.pdf": "unchanged"}


def test_ambiguous_file_name(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    folder = make_docs(tmp_path)
    (folder / "sub" / "a.txt").write_text("Another a.txt with other words.", encoding="utf-8")
    settings = settings_for(tmp_path / "data")
    ingest_paths(settings, [folder], embeddings=fake_embeddings)
    with pytest.raises(DocumentNotFoundError, match="several"):
        delete_documents(settings, "default", ["a.txt"])


def test_prune_removes_documents_whose_files_are_gone(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    folder = make_docs(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("Ingested from another folder.", encoding="utf-8")
    settings = settings_for(tmp_path / "data")
    ingest_paths(settings, [folder, other], embeddings=fake_embeddings)
    (folder / "a.txt").unlink()
    # without --prune nothing is removed
    report = ingest_paths(settings, [folder], embeddings=fake_embeddings)
    assert report.pruned == [] and "docs/a.txt" in sources_in(kb_of(settings, fake_embeddings))
    report = ingest_paths(settings, [folder], embeddings=fake_embeddings, prune=True)
    assert report.pruned == ["docs/a.txt"] and report.chunks_removed > 0
    assert "1 document(s) pruned" in report.summary()
    # only under the given roots: other/keep.txt stays
    assert sources_in(kb_of(settings, fake_embeddings)) == {"docs/c.pdf", "docs/sub/b.md", "other/keep.txt"}


def test_duplicate_rule_when_the_original_goes(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    """The first name owns the chunks; when it goes, the copy is indexed under its own name."""
    folder = make_docs(tmp_path)
    shutil.copyfile(folder / "a.txt", folder / "sub" / "copy.txt")
    settings = settings_for(tmp_path / "data")
    report = ingest_paths(settings, [folder], embeddings=fake_embeddings)
    assert result(report, "docs/sub/copy.txt").status == "duplicate"
    docs = {d.source: d for d in list_documents(settings, "default")}
    assert docs["docs/sub/copy.txt"].alias_of == "docs/a.txt" and docs["docs/sub/copy.txt"].chunks == 0
    # the original changes: its old chunks go, and the copy (same run) now owns that content
    (folder / "a.txt").write_text("Completely new text for a.", encoding="utf-8")
    report = ingest_paths(settings, [folder], embeddings=fake_embeddings)
    assert result(report, "docs/a.txt").status == "replaced"
    assert result(report, "docs/sub/copy.txt").status == "added"
    kb = kb_of(settings, fake_embeddings)
    fresh = settings_for(tmp_path / "fresh")
    ingest_paths(fresh, [folder], embeddings=fake_embeddings)
    assert contents(kb) == contents(kb_of(fresh, fake_embeddings))
    # deleting the owner drops the alias; the next ingestion indexes the copy again
    shutil.copyfile(folder / "sub" / "copy.txt", folder / "copy2.txt")
    ingest_paths(settings, [folder], embeddings=fake_embeddings)
    removal = delete_documents(settings, "default", ["docs/copy2.txt", "docs/sub/copy.txt"])
    assert "docs/sub/copy.txt" in removal.sources
    assert EN_TEXT[:40] not in "".join(t for t, _ in contents(kb_of(settings, fake_embeddings)).values())


def test_swapped_contents(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    folder = tmp_path / "swap"
    folder.mkdir()
    (folder / "x.txt").write_text("Content number one about apples.", encoding="utf-8")
    (folder / "y.txt").write_text("Content number two about pears.", encoding="utf-8")
    settings = settings_for(tmp_path / "data")
    ingest_paths(settings, [folder], embeddings=fake_embeddings)
    (folder / "x.txt").write_text("Content number two about pears.", encoding="utf-8")
    (folder / "y.txt").write_text("Content number one about apples.", encoding="utf-8")
    ingest_paths(settings, [folder], embeddings=fake_embeddings)
    fresh = settings_for(tmp_path / "fresh")
    ingest_paths(fresh, [folder], embeddings=fake_embeddings)
    stored = {m["source"]: t for t, m in contents(kb_of(settings, fake_embeddings)).values()}
    assert stored == {"swap/x.txt": "Content number two about pears.", "swap/y.txt": "Content number one about apples."}
    assert Manifest(settings.data_dir).records("kb-default", states=("pending", "deleting")) == []


def test_knowledge_base_create_and_delete(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    folder = make_docs(tmp_path)
    settings = settings_for(tmp_path / "data")
    create_knowledge_base(settings, "产品手册")
    with pytest.raises(KnowledgeBaseExistsError):
        create_knowledge_base(settings, "产品手册")
    assert [(k.name, k.chunks) for k in list_knowledge_bases(open_client(settings.data_dir))] == [("产品手册", 0)]
    report = ingest_paths(settings, [folder], embeddings=fake_embeddings, knowledge_base="产品手册")
    assert delete_knowledge_base(settings, "产品手册") == report.chunks_added
    assert list_knowledge_bases(open_client(settings.data_dir)) == []
    with pytest.raises(KnowledgeBaseNotFoundError):
        delete_knowledge_base(settings, "产品手册")
    # re-created, it starts empty: nothing of the old manifest survives
    report = ingest_paths(settings, [folder], embeddings=fake_embeddings, knowledge_base="产品手册")
    assert {f.status for f in report.files} == {"added"}


def test_chunk_ids_are_stable_across_data_directories(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    folder = make_docs(tmp_path)
    one, two = settings_for(tmp_path / "one"), settings_for(tmp_path / "two")
    ingest_paths(one, [folder], embeddings=fake_embeddings)
    ingest_paths(two, [folder], embeddings=fake_embeddings)
    ids = set(contents(kb_of(one, fake_embeddings)))
    assert ids == set(contents(kb_of(two, fake_embeddings)))
    assert chunk_id(file_sha256(folder / "a.txt"), 0) in ids


def test_metadata_on_every_chunk(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    folder = make_docs(tmp_path)
    settings = settings_for(tmp_path / "data")
    ingest_paths(settings, [folder], embeddings=fake_embeddings, knowledge_base="手册")
    raw = kb_of(settings, fake_embeddings, "手册")._collection.get(include=["metadatas"])["metadatas"]
    for meta in raw:
        assert {"source", "file_name", "sha256", "chunk_index", "start_index", "knowledge_base", "ingested_at"} <= set(meta)
        assert meta["knowledge_base"] == "手册"
    assert {m.get("heading") for m in raw if m["source"] == "docs/sub/b.md"} == {"产品手册"}
    assert {m.get("page") for m in raw if m["source"] == "docs/c.pdf"} == {1, 2}


# --- CLI -------------------------------------------------------------------------------------------


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("RAG_EMBEDDING__BACKEND", "fake")
    monkeypatch.setenv("RAG_LLM__BACKEND", "fake")
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):  # type: ignore[no-untyped-def]
        return runner.invoke(cli, ["--data-dir", str(tmp_path / "data"), *args], input=input)

    return invoke


def test_cli_kb_and_docs(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = make_docs(tmp_path)
    out = run("kb", "create", "产品手册")
    assert out.exit_code == 0 and "产品手册" in out.output
    assert run("kb", "create", "产品手册").exit_code == 1
    out = run("ingest", str(folder), "--kb", "产品手册", "-q")
    assert out.exit_code == 0, out.output
    out = run("docs", "list", "--kb", "产品手册")
    assert out.exit_code == 0
    lines = out.stdout.splitlines()
    assert lines[0].split("\t") == ["file", "chunks", "pages", "sha256", "ingested"]
    assert sorted(line.split("\t")[0] for line in lines[1:]) == ["docs/a.txt", "docs/c.pdf", "docs/sub/b.md"]
    out = run("docs", "delete", "a.txt", "--kb", "产品手册")
    assert out.exit_code == 0 and "docs/a.txt" in out.output
    assert run("docs", "delete", "a.txt", "--kb", "产品手册").exit_code == 1
    (folder / "c.pdf").unlink()
    out = run("ingest", str(folder), "--kb", "产品手册", "--prune", "-q")
    assert out.exit_code == 0 and "pruned: docs/c.pdf" in out.output
    assert run("kb", "delete", "产品手册", input="n\n").exit_code == 1  # not confirmed
    out = run("kb", "delete", "产品手册", "--yes")
    assert out.exit_code == 0
    assert "No knowledge bases" in run("kb", "list").output


def test_cli_exit_codes(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = make_docs(tmp_path)
    (folder / "broken.pdf").write_text("not a pdf", encoding="utf-8")
    out = run("ingest", str(folder), "-q")
    assert out.exit_code == 1 and "failed: docs/broken.pdf" in out.output
    (folder / "broken.pdf").unlink()
    assert run("ingest", str(folder), "-q").exit_code == 0
    assert run("ingest").exit_code == 2  # usage
    assert run("ingest", str(tmp_path / "missing")).exit_code == 2
    assert run("docs", "list", "--kb", "nope").exit_code == 1


# --- the embedder a knowledge base was built with ------------------------------------------------------


def test_knowledge_base_records_and_enforces_its_embedder(tmp_path: Path) -> None:
    """Vectors of one model mean nothing to another: a knowledge base refuses a different embedder with a
    named error (instead of answering from meaningless matches), and lists the one it was built with."""
    from langchain_core.documents import Document
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from rag_app.errors import EmbedderMismatchError

    client = open_client(tmp_path / "data")
    kb = KnowledgeBase(client, "手册", DeterministicFakeEmbedding(size=16))
    kb.add_chunks([Document(page_content="导入文档", metadata={"source": "a"})], ["a-0"], batch_size=10)
    (info,) = list_knowledge_bases(client)
    assert info.embedder == "DeterministicFakeEmbedding (16 dimensions)"
    KnowledgeBase(client, "手册", DeterministicFakeEmbedding(size=16))  # the same embedder: fine
    with pytest.raises(EmbedderMismatchError) as err:
        KnowledgeBase(open_client(tmp_path / "data"), "手册", DeterministicFakeEmbedding(size=8))
    assert "'手册' was built with the embedder 'DeterministicFakeEmbedding' (16 dimensions)" in str(err.value)
    assert "(8 dimensions)" in str(err.value) and "rag kb delete" in (err.value.hint or "")

    class Opaque(Embeddings):  # an embedder from elsewhere, that cannot say what it is: nothing checked
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [[1.0] * 16 for _ in texts]

        def embed_query(self, text: str) -> list[float]:
            return [1.0] * 16

    assert KnowledgeBase(client, "手册", Opaque()).count() == 1


def test_knowledge_base_made_before_the_record_is_checked_by_dimension_then_recorded(tmp_path: Path) -> None:
    from langchain_core.documents import Document
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from ingest.store import collection_name
    from rag_app.errors import EmbedderMismatchError

    client = open_client(tmp_path / "data")
    legacy = client.create_collection(collection_name("old"), metadata={"hnsw:space": "cosine", "display_name": "old"})
    legacy.add(ids=["x-0"], embeddings=[[0.5] * 16], documents=["旧的文档"], metadatas=[{"source": "x"}])
    with pytest.raises(EmbedderMismatchError, match="an embedder of 16 dimensions"):
        KnowledgeBase(client, "old", DeterministicFakeEmbedding(size=8))
    kb = KnowledgeBase(client, "old", DeterministicFakeEmbedding(size=16))  # same dimension: accepted ...
    assert list_knowledge_bases(client)[0].embedder is None
    kb.add_chunks([Document(page_content="新的文档", metadata={"source": "y"})], ["y-0"], batch_size=10)
    (info,) = list_knowledge_bases(client)  # ... and recorded by its next ingestion
    assert info.embedder == "DeterministicFakeEmbedding (16 dimensions)" and info.name == "old"
    assert client.get_collection(collection_name("old")).configuration_json["hnsw"]["space"] == "cosine"
    with pytest.raises(EmbedderMismatchError, match="'DeterministicFakeEmbedding' \\(16 dimensions\\)"):
        KnowledgeBase(client, "old", DeterministicFakeEmbedding(size=8))
