"""Chroma in client/server mode (``store.chroma_url``): the vectors live in a real ``chroma run`` subprocess
on a loopback port; the keyword index and the manifest stay in the writing service's data directory."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ingest.store import local_data_dir, open_client
from rag_app.errors import ChromaServerError, SettingsError
from rag_app.service import RagService
from rag_app.settings import Settings
from tests.conftest import REPO
from tests.servers import free_port, running_server

CHROMA = Path(sys.executable).parent / "chroma"


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """``chroma run`` on a free loopback port; yields its URL and its storage folder."""
    exe = str(CHROMA) if CHROMA.exists() else shutil.which("chroma")
    if exe is None:
        pytest.skip("the chroma command (chromadb) is not installed")
    root = tmp_path_factory.mktemp("chroma_server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [exe, "run", "--path", str(root / "server-store"), "--host", "127.0.0.1", "--port", str(port)]
    with running_server(command, f"{url}/api/v2/heartbeat", root / "server.log", timeout=60):
        yield url, root / "server-store"


def test_bad_chroma_url_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="chroma_url"):
        open_client(tmp_path, "ftp://somewhere")


def test_unreachable_chroma_server_is_a_friendly_error(tmp_path: Path) -> None:
    with pytest.raises(ChromaServerError, match="cannot reach") as err:
        open_client(tmp_path, f"http://127.0.0.1:{free_port()}")
    assert "store.chroma_url" in err.value.friendly()


@pytest.mark.e2e
def test_ingest_ask_delete_through_a_chroma_server(
    chroma_server: tuple[str, Path], tmp_path: Path, real_embeddings: Any
) -> None:
    url, server_store = chroma_server
    data = tmp_path / "data"
    settings = Settings.load(data_dir=data, store={"chroma_url": url}, llm={"backend": "fake"})
    service = RagService(settings, embeddings=real_embeddings)

    report = service.ingest([REPO / "samples" / "guide"])
    assert not report.failed, report.summary()
    assert report.chunks_added > 5

    # the vectors are on the server, not in the data directory; keyword index and manifest are local
    assert not (data / "chroma" / "chroma.sqlite3").exists()
    assert any((data / "keyword").glob("*.sqlite3"))
    client = open_client(data, url)
    assert local_data_dir(client) == data
    assert [kb.name for kb in service.knowledge_bases()] == ["default"]
    assert server_store.is_dir()

    docs = service.retriever().invoke("How do I import documents?")
    assert docs and any(d.metadata["source"].endswith(".md") for d in docs)
    assert all("bm25_score" in d.metadata or "vector_score" in d.metadata for d in docs)

    # a second client (another process in a real deployment) sees the same vectors through the server
    other = RagService(Settings.load(data_dir=data, store={"chroma_url": url}), embeddings=real_embeddings)
    assert {kb.chunks for kb in other.knowledge_bases()} == {kb.chunks for kb in service.knowledge_bases()}

    before = service.knowledge_bases()[0].chunks
    removal = service.delete_documents(["user-guide.en.md"])
    assert removal.chunks_removed > 0
    assert service.knowledge_bases()[0].chunks == before - removal.chunks_removed
    sources = {d.metadata["source"] for d in service.retriever().invoke("如何导入文档？", k=10)}
    assert sources and not any(s.endswith("user-guide.en.md") for s in sources)
    assert not any("user-guide.en.md" in r.source for r in service.documents())
