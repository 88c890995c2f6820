"""The CLI against a live ``rag serve`` (setting ``server_url``): the same commands, answered by the server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from langchain_core.embeddings import DeterministicFakeEmbedding

from rag_app.cli import cli
from rag_app.errors import DocumentNotFoundError, KnowledgeBaseNotFoundError, RemoteServerError
from rag_app.preview import PreviewError
from rag_app.remote import RemoteRagService
from rag_app.server import create_app
from rag_app.service import RagService
from rag_app.settings import Settings
from tests.servers import ServerThread, free_port

DOC = "The sky is blue because of Rayleigh scattering of sunlight. Grass is green because of chlorophyll."


@pytest.fixture
def local(tmp_path: Path) -> RagService:
    settings = Settings.load(
        data_dir=tmp_path / "server-data",
        llm={"backend": "fake", "fake_responses": ["Fake answer [1]."]},
        server={"api_keys": ["secret"]},
    )
    svc = RagService(settings, embeddings=DeterministicFakeEmbedding(size=32))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "sky.txt").write_text(DOC, encoding="utf-8")
    svc.ingest([docs])
    return svc


@pytest.fixture
def server(local: RagService) -> Iterator[ServerThread]:
    with ServerThread(create_app(local, local.settings)) as running:
        yield running


def _rag(server: ServerThread, tmp_path: Path, *args: str, key: str | None = "secret") -> Result:
    env = {"RAG_SERVER_URL": server.url, "RAG_DATA_DIR": str(tmp_path / "client-data")}
    if key:
        env["RAG_SERVER_API_KEY"] = key
    return CliRunner().invoke(cli, list(args), env=env)


def test_cli_ask_through_the_server(server: ServerThread, tmp_path: Path) -> None:
    result = _rag(server, tmp_path, "ask", "Why is the sky blue?")
    assert result.exit_code == 0, result.output
    assert "Fake answer [1]." in result.output
    assert "[1] docs/sky.txt — The sky is blue because of Rayleigh scattering" in result.output
    assert not (tmp_path / "client-data").exists()  # the client stored and loaded nothing


def test_cli_manages_knowledge_bases_and_documents_through_the_server(
    server: ServerThread, tmp_path: Path, local: RagService
) -> None:
    new = tmp_path / "new.txt"
    new.write_text("Uploaded through the server from the command line. " * 5, encoding="utf-8")
    result = _rag(server, tmp_path, "ingest", str(new), "--kb", "远程")
    assert result.exit_code == 0, result.output
    assert "Knowledge base '远程': 1 file(s) ok, 0 skipped, 0 failed; chunks: 1 added" in result.output
    assert [d.source for d in local.documents("远程")] == ["new.txt"]  # really on the server
    listing = _rag(server, tmp_path, "kb", "list")
    assert "default\t1 chunks\tDeterministicFakeEmbedding" in listing.output and "远程\t1 chunks" in listing.output
    docs = _rag(server, tmp_path, "docs", "list", "--kb", "远程")
    assert "new.txt\t1\t-" in docs.output
    deleted = _rag(server, tmp_path, "docs", "delete", "new.txt", "--kb", "远程")
    assert "Deleted 1 document(s), 1 chunks: new.txt" in deleted.output
    assert _rag(server, tmp_path, "kb", "create", "空").exit_code == 0
    assert "空" in [kb.name for kb in local.knowledge_bases()]
    assert "Deleted knowledge base '空' (0 chunks)." in _rag(server, tmp_path, "kb", "delete", "空", "-y").output


def test_cli_errors_through_the_server_are_one_line(server: ServerThread, tmp_path: Path) -> None:
    unknown = _rag(server, tmp_path, "ask", "Why?", "--kb", "nope")
    assert unknown.exit_code == 1 and "Error: knowledge base 'nope' does not exist" in unknown.output
    no_key = _rag(server, tmp_path, "kb", "list", key=None)
    assert no_key.exit_code == 1 and "refused" in no_key.output and "server_api_key" in no_key.output
    local_only = _rag(server, tmp_path, "summarize", __file__)
    assert local_only.exit_code == 1 and "not through server_url" in local_only.output
    for result in (unknown, no_key, local_only):
        assert "Traceback" not in result.output


def test_cli_says_when_the_server_is_down(tmp_path: Path) -> None:
    env = {"RAG_SERVER_URL": f"http://127.0.0.1:{free_port()}"}
    result = CliRunner().invoke(cli, ["kb", "list"], env=env)
    assert result.exit_code == 1 and "cannot reach the server" in result.output and "Traceback" not in result.output


def test_remote_chain_streams_like_the_local_chain(server: ServerThread, local: RagService) -> None:
    remote = RemoteRagService(local.settings.model_copy(update={"server_url": server.url, "server_api_key": "secret"}))
    question = {"question": "Why is the sky blue?", "chat_history": [("Hi", "Hello.")]}

    def shape(chunks: list[dict[str, Any]]) -> tuple[list[str], str, Any, Any]:
        keys = [k for c in chunks for k in c if k in ("sources", "answer", "grounding")]
        collapsed = [k for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k]
        answer = "".join(c["answer"] for c in chunks if "answer" in c)
        sources = next(c["sources"] for c in chunks if "sources" in c)
        grounding = next(c["grounding"] for c in chunks if "grounding" in c)
        return collapsed, answer, [s["source"] for s in sources], grounding

    # the fake model answers the condense step too: both sides see the same canned text
    local_shape = shape(list(local.chain().stream(question)))
    remote_shape = shape(list(remote.chain().stream(question)))
    assert remote_shape == local_shape
    assert remote_shape[0] == ["sources", "answer", "grounding"]
    result = remote.chain().invoke("Why is the sky blue?")
    assert result["answer"] == "Fake answer [1]." and result["sources"][0]["cited"] is True
    with pytest.raises(KnowledgeBaseNotFoundError):
        list(remote.chain("nope").stream("Why?"))
    with pytest.raises(RemoteServerError, match="not through server_url"):
        remote.retriever()
    remote.close()


def test_remote_service_names_what_it_cannot_do(local: RagService) -> None:
    remote = RemoteRagService(local.settings.model_copy(update={"server_url": "http://127.0.0.1:9"}))
    assert not hasattr(remote, "reingest")
    with pytest.raises(RemoteServerError, match="'reingest' is not available through server_url"):
        remote.reingest(["a.pdf"])
    # What the app's pages fall back on: no local file (no re-ingest, no summary of it), and the user's own
    # conversations kept on this side.
    assert remote.source_file("a.pdf") is None
    store = remote.conversations()
    store.create("default", "kept here")
    assert [c.title for c in store.list()] == ["kept here"]


GUIDE_PDF = Path(__file__).resolve().parent.parent / "samples" / "guide" / "user-guide.zh.pdf"


def test_remote_views_are_the_local_services(server: ServerThread, local: RagService) -> None:
    """Search, the chunk browser, a cited passage in its context and a PDF page: the same through the server."""
    local.ingest_uploads([("guide.pdf", GUIDE_PDF.read_bytes())], knowledge_base="指南")  # kept on the server
    remote = RemoteRagService(local.settings.model_copy(update={"server_url": server.url, "server_api_key": "secret"}))
    try:
        for query, kb in (("怎样导入文档？", "指南"), ("Why is the sky blue?", None)):
            found = remote.search(query, kb)
            assert found == local.search(query, kb) and found["results"], query
        assert remote.search("怎样导入文档？", "指南")["results"][0]["source"] == "guide.pdf"
        chunks = remote.chunks("guide.pdf", "指南")
        assert chunks == local.chunks("guide.pdf", "指南") and len(chunks) > 3
        assert remote.passage_context("guide.pdf", 2, 3, "指南") == local.passage_context("guide.pdf", 2, 3, "指南")
        before, text, after = remote.passage_context("guide.pdf", 0, knowledge_base="指南")
        assert (before, text, after) == ("", chunks[0]["text"], chunks[1]["text"])
        passage = "\n".join(c["text"] for c in chunks if c["page"] == 1)  # long, Chinese: sent in a body
        png = remote.page_image("guide.pdf", 1, passage, "指南")
        assert png is not None and png.startswith(b"\x89PNG") and png == local.page_image("guide.pdf", 1, passage, "指南")
        # where the local service has no page image, neither has the remote one; errors keep their names
        assert remote.page_image("docs/sky.txt", 1) is None and local.page_image("docs/sky.txt", 1) is None
        with pytest.raises(PreviewError, match="has no page 99"):
            remote.page_image("guide.pdf", 99, None, "指南")
        with pytest.raises(DocumentNotFoundError, match="nope.txt"):
            remote.chunks("nope.txt")
        with pytest.raises(DocumentNotFoundError):
            remote.passage_context("nope.txt", 0)
        with pytest.raises(KnowledgeBaseNotFoundError):
            remote.search("sky", "nope")
    finally:
        remote.close()
