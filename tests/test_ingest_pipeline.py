"""The ingestion pipeline over a real persistent Chroma (in tmp_path) with fake embeddings."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from langchain_core.embeddings import Embeddings

from ingest.clean import clean_text
from ingest.loaders import load_document
from ingest.pipeline import IngestReport, ProgressEvent, chunk_id, file_sha256, ingest_paths
from ingest.store import KnowledgeBase, collection_name, list_knowledge_bases, open_client
from rag_app.settings import Settings
from tests.test_loaders import make_pdf

EN_TEXT = (
    "Retrieval augmented generation combines search with a language model. "
    "Documents are split into chunks and embedded into vectors.\n\n"
    "When a question arrives, the most similar chunks are retrieved from the store. "
    "The model then writes an answer that cites the numbered sources. "
    "Everything runs locally, so private documents never leave the machine."
)
ZH_TEXT = (
    "# 产品手册\n\n知识库问答系统先把文档切成小块并计算向量。用户提问时，系统检索最相关的几个片段！"
    "这些片段和问题一起交给本地大模型生成回答？回答里用编号标出引用的资料，方便核对。\n\n"
    "所有数据都保存在本机，不会上传到任何服务器。中文文本没有空格，所以切分时要依靠标点符号。"
)
PDF_PAGES = [
    "The first page explains installation.\nRun the installer and follow the steps.",
    "The second page explains the command line.\nUse rag ingest and rag ask.",
]


def settings_for(data_dir: Path, **ingest: Any) -> Settings:
    return Settings.load(
        data_dir=data_dir,
        llm={"backend": "fake"},
        embedding={"backend": "fake"},
        ingest={"chunk_size": 40, "chunk_overlap": 5, **ingest},
    )


def make_docs(root: Path) -> Path:
    """docs/a.txt (English), docs/sub/b.md (Chinese), docs/c.pdf (two pages)."""
    folder = root / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text(EN_TEXT, encoding="utf-8")
    (folder / "sub" / "b.md").write_text(ZH_TEXT, encoding="utf-8")
    make_pdf(folder / "c.pdf", PDF_PAGES)
    return folder


def kb_of(settings: Settings, embeddings: Embeddings, name: str = "default") -> KnowledgeBase:
    return KnowledgeBase(open_client(settings.data_dir), name, embeddings)


def contents(kb: KnowledgeBase) -> dict[str, tuple[str, dict[str, Any]]]:
    """id → (text, metadata without the ingestion time)."""
    got = kb._collection.get(include=["documents", "metadatas"])
    out = {}
    for id_, text, meta in zip(got["ids"], got["documents"], got["metadatas"], strict=True):
        meta = {k: v for k, v in meta.items() if k != "ingested_at"}
        out[id_] = (text, meta)
    return out


def status_of(report: IngestReport) -> dict[str, str]:
    return {f.path: f.status for f in report.files}


def result(report: IngestReport, path: str) -> Any:
    (item,) = [f for f in report.files if f.path == path]
    return item


# --- a first ingestion ---------------------------------------------------------------------------


def test_ingest_folder(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    folder = make_docs(tmp_path)
    settings = settings_for(tmp_path / "data")
    events: list[ProgressEvent] = []
    report = ingest_paths(settings, [folder], embeddings=fake_embeddings, progress=events.append)
    assert status_of(report) == {"docs/a.txt": "added", "docs/c.pdf": "added", "docs/sub/b.md": "added"}
    assert report.knowledge_base == "default"
    assert not report.failed and not report.skipped
    assert all(f.chunks > 0 for f in report.files)
    assert result(report, "docs/c.pdf").pages == 2
    kb = kb_of(settings, fake_embeddings)
    assert kb.count() == report.chunks_added == sum(f.chunks for f in report.files)
    assert "3 file(s) ok, 0 skipped, 0 failed" in report.summary()
    raw = kb._collection.get(include=["metadatas"])["metadatas"]
    assert all(str(m["ingested_at"]).startswith("20") for m in raw)
    # progress: start, one event per file, done
    stages = [e.stage for e in events]
    assert stages[0] == "start" and stages[-1] == "done"
    assert [e.files_done for e in events if e.stage == "file"] == [1, 2, 3]
    assert all(e.files_total == 3 for e in events)


def test_chunk_metadata(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    folder = make_docs(tmp_path)
    settings = settings_for(tmp_path / "data")
    ingest_paths(settings, [folder], embeddings=fake_embeddings)
    stored = contents(kb_of(settings, fake_embeddings))
    by_source: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for id_, (text, meta) in stored.items():
        by_source.setdefault(meta["source"], []).append((id_, text, meta))
    assert set(by_source) == {"docs/a.txt", "docs/sub/b.md", "docs/c.pdf"}
    for source, items in by_source.items():
        path = tmp_path / source
        sha = file_sha256(path)
        items.sort(key=lambda t: t[2]["chunk_index"])
        assert [m["chunk_index"] for _, _, m in items] == list(range(len(items)))
        for id_, text, meta in items:
            assert meta["file_name"] == path.name
            assert meta["sha256"] == sha
            assert meta["knowledge_base"] == "default"
            assert id_ == chunk_id(sha, meta["chunk_index"])
            assert isinstance(meta["start_index"], int)
            if source.endswith(".pdf"):
                assert meta["page"] in (1, 2)
            else:
                assert "page" not in meta
        # start_index points into the cleaned text of the section the chunk came from
        sections = load_document(path).sections
        for _, text, meta in items:
            section = next(s for s in sections if s.page == meta.get("page"))
            cleaned = clean_text(section.text, rejoin_lines=section.layout_breaks)
            start = meta["start_index"]
            assert cleaned[start : start + len(text)] == text
    pdf_pages = {m["page"] for _, _, m in by_source["docs/c.pdf"]}
    assert pdf_pages == {1, 2}


def test_single_file_source_is_its_name(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    folder = make_docs(tmp_path)
    settings = settings_for(tmp_path / "data")
    report = ingest_paths(settings, [folder / "sub" / "b.md"], embeddings=fake_embeddings)
    assert status_of(report) == {"b.md": "added"}


def test_hidden_files_are_not_collected(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    folder = make_docs(tmp_path)
    (folder / ".secret.txt").write_text("hidden", encoding="utf-8")
    (folder / ".git").mkdir()
    (folder / ".git" / "notes.txt").write_text("hidden too", encoding="utf-8")
    report = ingest_paths(settings_for(tmp_path / "data"), [folder], embeddings=fake_embeddings)
    assert not [f for f in report.files if "secret" in f.path or ".git" in f.path]


# --- re-ingestion --------------------------------------------------------------------------------


def test_reingest_unchanged(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    folder = make_docs(tmp_path)
    settings = settings_for(tmp_path / "data")
    first = ingest_paths(settings, [folder], embeddings=fake_embeddings)
    before = contents(kb_of(settings, fake_embeddings))
    second = ingest_paths(settings, [folder], embeddings=fake_embeddings)
    assert set(status_of(second).values()) == {"unchanged"}
    assert second.chunks_added == 0 and second.chunks_removed == 0
    assert second.chunks_unchanged == first.chunks_added
    after = contents(kb_of(settings, fake_embeddings))
    assert after == before


def test_modified_file_replaces_old_chunks(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    folder = make_docs(tmp_path)
    settings = settings_for(tmp_path / "data")
    ingest_paths(settings, [folder], embeddings=fake_embeddings)
    old_sha = file_sha256(folder / "a.txt")
    (folder / "a.txt").write_text("A much shorter replacement text.", encoding="utf-8")
    report = ingest_paths(settings, [folder], embeddings=fake_embeddings)
    assert status_of(report) == {"docs/a.txt": "replaced", "docs/sub/b.md": "unchanged", "docs/c.pdf": "unchanged"}
    assert report.chunks_removed > 0
    kb = kb_of(settings, fake_embeddings)
    assert kb.chunk_ids_where({"sha256": old_sha}) == []
    texts = [t for t, m in contents(kb).values() if m["source"] == "docs/a.txt"]
    assert texts == ["A much shorter replacement text."]
    # No stale IDs: the store equals a fresh ingestion of the final files.
    fresh = settings_for(tmp_path / "fresh")
    ingest_paths(fresh, [folder], embeddings=fake_embeddings)
    assert contents(kb) == contents(kb_of(fresh, fake_embeddings))


def test_modified_file_with_more_chunks(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    folder = make_docs(tmp_path)
    settings = settings_for(tmp_path / "data")
    (folder / "a.txt").write_text("Short.", encoding="utf-8")
    ingest_paths(settings, [folder], embeddings=fake_embeddings)
    (folder / "a.txt").write_text(EN_TEXT + "\n\n" + EN_TEXT.upper(), encoding="utf-8")
    report = ingest_paths(settings, [folder], embeddings=fake_embeddings)
    assert result(report, "docs/a.txt").status == "replaced"
    fresh = settings_for(tmp_path / "fresh")
    ingest_paths(fresh, [folder], embeddings=fake_embeddings)
    assert contents(kb_of(settings, fake_embeddings)) == contents(kb_of(fresh, fake_embeddings))


def test_file_changed_to_content_of_another_file_leaves_no_stale_chunks(
    tmp_path: Path, fake_embeddings: Embeddings
) -> None:
    # a.txt is edited so that it now holds the same bytes as another file: its old chunks must go.
    folder = make_docs(tmp_path)
    (folder / "z.txt").write_text("Identical content in two files.", encoding="utf-8")
    settings = settings_for(tmp_path / "data")
    ingest_paths(settings, [folder], embeddings=fake_embeddings)
    old_sha = file_sha256(folder / "a.txt")
    shutil.copyfile(folder / "z.txt", folder / "a.txt")
    ingest_paths(settings, [folder], embeddings=fake_embeddings)
    kb = kb_of(settings, fake_embeddings)
    assert kb.chunk_ids_where({"sha256": old_sha}) == [], "old chunks of docs/a.txt are still stored"
    stale = [t for t, m in contents(kb).values() if m["source"] == "docs/a.txt"]
    assert stale == []


def test_same_content_under_two_names_is_stored_once(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    folder = make_docs(tmp_path)
    shutil.copyfile(folder / "a.txt", folder / "sub" / "copy-of-a.txt")
    settings = settings_for(tmp_path / "data")
    report = ingest_paths(settings, [folder], embeddings=fake_embeddings)
    dup = result(report, "docs/sub/copy-of-a.txt")
    assert dup.status == "duplicate"
    assert "docs/a.txt" in dup.reason
    assert result(report, "docs/a.txt").status == "added"
    kb = kb_of(settings, fake_embeddings)
    sha = file_sha256(folder / "a.txt")
    assert len(kb.chunk_ids_where({"sha256": sha})) == result(report, "docs/a.txt").chunks
    assert kb.count() == report.chunks_added
    # and again: still a duplicate, nothing added
    again = ingest_paths(settings, [folder], embeddings=fake_embeddings)
    assert result(again, "docs/sub/copy-of-a.txt").status == "duplicate"
    assert again.chunks_added == 0


# --- bad files -----------------------------------------------------------------------------------


def test_bad_files_are_reported_and_the_rest_ingested(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    folder = make_docs(tmp_path)
    (folder / "empty.txt").write_bytes(b"")
    (folder / "binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4)
    (folder / "fake.pdf").write_text("not a pdf", encoding="utf-8")
    settings = settings_for(tmp_path / "data")
    report = ingest_paths(settings, [folder], embeddings=fake_embeddings)
    statuses = status_of(report)
    assert statuses["docs/a.txt"] == statuses["docs/sub/b.md"] == statuses["docs/c.pdf"] == "added"
    failed = {f.path: f.reason for f in report.failed}
    assert set(failed) == {"docs/empty.txt", "docs/binary.txt", "docs/fake.pdf"}
    assert failed["docs/empty.txt"].startswith("docs/empty.txt: ") and "empty" in failed["docs/empty.txt"]
    assert failed["docs/binary.txt"].startswith("docs/binary.txt: ") and "binary" in failed["docs/binary.txt"]
    assert failed["docs/fake.pdf"].startswith("docs/fake.pdf: ")
    assert kb_of(settings, fake_embeddings).count() == report.chunks_added > 0
    assert "3 failed" in report.summary()


def test_unknown_extension_is_skipped(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    folder = make_docs(tmp_path)
    (folder / "data.xyz").write_text("whatever", encoding="utf-8")
    report = ingest_paths(settings_for(tmp_path / "data"), [folder], embeddings=fake_embeddings)
    skipped = result(report, "docs/data.xyz")
    assert skipped.status == "skipped"
    assert skipped.reason == "docs/data.xyz: unsupported file type '.xyz'"
    assert len(report.ok) == 3


def test_pdf_pages_without_text_give_a_warning(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    folder = tmp_path / "scans"
    folder.mkdir()
    make_pdf(folder / "partly.pdf", ["Only the first page has text.", ""])
    report = ingest_paths(settings_for(tmp_path / "data"), [folder], embeddings=fake_embeddings)
    item = result(report, "scans/partly.pdf")
    assert item.status == "added" and item.pages == 1
    assert any("without a text layer" in w for w in item.warnings)


def test_unreadable_gbk_pdf_fails(tmp_path: Path, fake_embeddings: Embeddings, shared_eval: Path) -> None:
    folder = tmp_path / "pdfs"
    folder.mkdir()
    shutil.copy(shared_eval / "docs" / "pdfjs_XiaoBiaoSong_gbk_nonunicode.pdf", folder)
    settings = settings_for(tmp_path / "data")
    report = ingest_paths(settings, [folder], embeddings=fake_embeddings)
    item = result(report, "pdfs/pdfjs_XiaoBiaoSong_gbk_nonunicode.pdf")
    assert item.status == "failed"
    assert "unreadable" in item.reason
    assert kb_of(settings, fake_embeddings).count() == 0


def test_encrypted_pdf_with_password(tmp_path: Path, fake_embeddings: Embeddings, shared_eval: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    shutil.copy(shared_eval / "pdf_tricky" / "pypdf_encrypted-file_pw-test.pdf", folder)
    settings = settings_for(tmp_path / "data")
    report = ingest_paths(settings, [folder], embeddings=fake_embeddings)
    item = result(report, "locked/pypdf_encrypted-file_pw-test.pdf")
    assert item.status == "failed" and "password" in item.reason
    report = ingest_paths(
        settings, [folder], embeddings=fake_embeddings, passwords={"pypdf_encrypted-file_pw-test.pdf": "test"}
    )
    assert result(report, "locked/pypdf_encrypted-file_pw-test.pdf").status == "added"


# --- knowledge bases -----------------------------------------------------------------------------


def test_chinese_knowledge_base_name(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    folder = make_docs(tmp_path)
    settings = settings_for(tmp_path / "data")
    report = ingest_paths(settings, [folder], embeddings=fake_embeddings, knowledge_base="产品手册")
    assert report.knowledge_base == "产品手册"
    ingest_paths(settings, [folder / "a.txt"], embeddings=fake_embeddings)  # into "default"
    infos = {kb.name: kb for kb in list_knowledge_bases(open_client(settings.data_dir))}
    assert set(infos) == {"产品手册", "default"}
    assert infos["产品手册"].chunks == report.chunks_added
    assert infos["产品手册"].collection == collection_name("产品手册")
    metas = [m for _, m in contents(kb_of(settings, fake_embeddings, "产品手册")).values()]
    assert {m["knowledge_base"] for m in metas} == {"产品手册"}
    # knowledge bases are separate: "default" has only a.txt
    default_sources = {m["source"] for _, m in contents(kb_of(settings, fake_embeddings)).values()}
    assert default_sources == {"a.txt"}


def test_knowledge_base_from_settings(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    folder = make_docs(tmp_path)
    settings = settings_for(tmp_path / "data").model_copy(update={"knowledge_base": "手册二"})
    report = ingest_paths(settings, [folder], embeddings=fake_embeddings)
    assert report.knowledge_base == "手册二"
    names = [kb.name for kb in list_knowledge_bases(open_client(settings.data_dir))]
    assert names == ["手册二"]


ODD_NAMES = [
    "default",
    "a",
    "产品手册",
    "my kb!",
    "  padded  ",
    "x" * 100,
    "x" * 43,
    "...",
    "-a-",
    "a.b",
    "a..b",
    "a_b-c.d",
    "192.168.1.1",
    "Ünïcödé naïve",
    "日本語とEnglish",
    "🙂",
]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_collection_name_is_valid_for_chroma(tmp_path: Path, name: str, fake_embeddings: Embeddings) -> None:
    cname = collection_name(name)
    assert cname == collection_name(name)  # stable
    assert 3 <= len(cname) <= 63
    client = open_client(tmp_path / "data")
    kb = KnowledgeBase(client, name, fake_embeddings)  # Chroma validates the name here
    assert kb.collection_name == cname
    assert [i.name for i in list_knowledge_bases(client)] == [name]


def test_collection_names_are_distinct() -> None:
    names = [collection_name(n) for n in ODD_NAMES]
    assert len(set(names)) == len(names)


def test_collection_name_cannot_collide_with_a_hashed_name() -> None:
    # "my kb!" is hashed to kb-my-kb-<digest>; the plain name "my-kb-<digest>" must not map to the same.
    hashed = collection_name("my kb!")
    lookalike = hashed[len("kb-") :]
    assert collection_name(lookalike) != hashed


@pytest.mark.parametrize("name", ["", "   "])
def test_empty_knowledge_base_name(name: str) -> None:
    from rag_app.errors import SettingsError

    with pytest.raises(SettingsError):
        collection_name(name)
