"""Issue 18, the store's share: a full disk mid-write leaves the counts as they were (and says "disk full",
507), and one rule for knowledge-base names (rag_app.names) that the CLI, the app and the server all apply.

The disk is made full by raising ENOSPC (or SQLite's SQLITE_FULL) from a real write function of one store at a
time — the keyword index, Chroma's add, the manifest's commit — in a real persistent data directory."""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from langchain_core.embeddings import DeterministicFakeEmbedding

from ingest.documents import NoEmbeddings, create_knowledge_base
from ingest.keyword_index import KeywordIndex
from ingest.manifest import Manifest
from ingest.store import KnowledgeBase, open_client, recorded_knowledge_bases
from rag_app.cli import cli
from rag_app.errors import DiskFullError, KnowledgeBaseNameError
from rag_app.names import MAX_NAME_LENGTH, check_knowledge_base_name, name_problem
from rag_app.server import create_app
from rag_app.service import RagService
from rag_app.settings import Settings
from tests.servers import ServerThread

SMALL = "Basalt is a dark volcanic rock. It forms when lava cools quickly."
# Many paragraphs: several embedding batches of 8 chunks, so that the failure strikes in the middle.
BIG = "\n\n".join(f"Paragraph {i} describes granite sample {i} and the quarry it came from." * 6 for i in range(120))


def _settings(tmp_path: Path) -> Settings:
    return Settings.load(data_dir=tmp_path / "data", llm={"backend": "fake", "fake_responses": ["Fake [1]."]},
                         ingest={"embed_batch": 8})


def _service(tmp_path: Path) -> RagService:
    svc = RagService(_settings(tmp_path), embeddings=DeterministicFakeEmbedding(size=32))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "small.txt").write_text(SMALL, encoding="utf-8")
    assert not svc.ingest([docs]).failed
    return svc


def _counts(svc: RagService) -> dict[str, Any]:
    """Every count a user or a reader sees: the listing, the documents, and each store underneath."""
    data_dir = svc.settings.data_dir
    kb = KnowledgeBase(open_client(data_dir), "default", NoEmbeddings(), create=False)
    return {
        "listed": {info.name: info.chunks for info in svc.knowledge_bases()},
        "documents": [(r.source, r.chunks) for r in svc.documents()],
        "chroma": kb.count(),
        "keyword": kb.keywords.count(),
        "pending": [r.source for r in Manifest(data_dir).records(kb.collection_name, states=("pending", "deleting"))],
        "manifest_trusted": recorded_knowledge_bases(data_dir) is not None,
    }


def _fail_on_call(
    monkeypatch: pytest.MonkeyPatch, owner: Any, attr: str, nth: int, exc: Callable[[], Exception]
) -> list[int]:
    """Make ``owner.attr`` raise ``exc()`` on its ``nth`` call (the earlier ones write for real)."""
    real = getattr(owner, attr)
    calls = [0]

    def failing(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == nth:
            raise exc()
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, attr, failing)
    return calls


def _enospc() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", "/secret/absolute/path/keyword.sqlite3")


def _inject(monkeypatch: pytest.MonkeyPatch, where: str) -> list[int]:
    from langchain_chroma import Chroma

    if where == "keyword index":
        return _fail_on_call(monkeypatch, KeywordIndex, "add", 3, _enospc)
    if where == "chroma add":
        return _fail_on_call(monkeypatch, Chroma, "add_texts", 3, _enospc)
    assert where == "manifest commit"
    return _fail_on_call(monkeypatch, Manifest, "commit", 1,
                         lambda: sqlite3.OperationalError("database or disk is full"))


# --- a full disk ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["keyword index", "chroma add", "manifest commit"])
def test_disk_full_mid_ingest_rolls_back_every_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     where: str) -> None:
    svc = _service(tmp_path)
    before = _counts(svc)
    assert before["listed"] == {"default": 1} and before["chroma"] == before["keyword"] == 1
    (tmp_path / "docs" / "big.txt").write_text(BIG, encoding="utf-8")
    calls = _inject(monkeypatch, where)
    with pytest.raises(DiskFullError, match="disk full") as raised:
        svc.ingest([tmp_path / "docs"])
    assert calls[0] >= 1 and "/secret" not in raised.value.friendly()
    monkeypatch.undo()
    # At once, before any other write: what readers count is what was there before the failed write.
    assert _counts(svc) == before
    # The next ingestion has nothing to clean up, and writes the document whole.
    report = svc.ingest([tmp_path / "docs"])
    assert report.recovered == [] and [f.status for f in report.files] == ["added", "unchanged"]
    after = _counts(svc)
    assert after["chroma"] == after["keyword"] == after["listed"]["default"] == 1 + report.chunks_added > 10


def test_a_full_disk_that_blocks_the_undo_too_still_counts_what_readers_see(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As measured on a real 100 MB tmpfs: Chroma's compactor fails with no word of the disk ("Failed to apply
    logs to the metadata segment"), and deleting fails the same way, so nothing can be undone until space is
    freed. The error still says "disk full", and the listing still counts the complete documents only."""
    import shutil

    from chromadb.api.models.Collection import Collection
    from chromadb.errors import InternalError
    from langchain_chroma import Chroma

    svc = _service(tmp_path)
    before = _counts(svc)
    (tmp_path / "docs" / "big.txt").write_text(BIG, encoding="utf-8")
    def compaction() -> Exception:
        return InternalError("Error in compaction: Failed to apply logs to the metadata segment")

    _fail_on_call(monkeypatch, Chroma, "add_texts", 3, compaction)
    _fail_on_call(monkeypatch, Collection, "delete", 1, compaction)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=0))
    with pytest.raises(DiskFullError, match="disk full"):
        svc.ingest([tmp_path / "docs"])
    monkeypatch.undo()
    stuck = _counts(svc)
    assert stuck["chroma"] > 1 and stuck["pending"] == ["docs/big.txt"]  # the undo could not run
    assert stuck["listed"] == before["listed"] and stuck["documents"] == before["documents"]
    report = svc.ingest([tmp_path / "docs"])  # space freed: the next writer cleans up, then writes it whole
    assert report.recovered == ["docs/big.txt"] and not report.failed
    after = _counts(svc)
    assert after["chroma"] == after["keyword"] == after["listed"]["default"] == 1 + report.chunks_added


def test_disk_full_upload_is_507_and_counts_stay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    svc = _service(tmp_path)
    before = _counts(svc)
    app = create_app(svc, svc.settings, warm_up=False)
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        listed = client.get("/v1/knowledge_bases").json()["data"]
        _inject(monkeypatch, "keyword index")
        response = client.post("/v1/knowledge_bases/default/documents",
                               files=[("files", ("big.txt", BIG.encode(), "text/plain"))])
        assert response.status_code == 507, response.text
        error = response.json()["error"]
        assert "disk full" in error["message"] and error["code"] == "disk_full"
        assert "/secret" not in response.text and str(tmp_path) not in response.text
        monkeypatch.undo()
        assert client.get("/v1/knowledge_bases").json()["data"] == listed
        docs = client.get("/v1/knowledge_bases/default/documents").json()["data"]
        assert [d["source"] for d in docs] == ["docs/small.txt"]
    assert _counts(svc) == before


def test_disk_full_is_one_cli_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "big.txt").write_text(BIG, encoding="utf-8")
    _fail_on_call(monkeypatch, KeywordIndex, "add", 1, _enospc)
    result = _rag(tmp_path / "data", "ingest", "-q", str(docs))
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: disk full"), lines
    assert "Traceback" not in result.output


# --- the name rule --------------------------------------------------------------------------------------------

GOOD = ["default", "产品手册", "Handbook 2.0", "my_docs-v1", "हिन्दी", "x" * MAX_NAME_LENGTH, "a.b"]
BAD = ["a/b", "a\\b", "a\x01b", "tab\there", "line\n", "x" * 200, "x" * (MAX_NAME_LENGTH + 1), ".", "..",
       ".hidden", "", "   ", "a%2Fb", "a?b", "a#b", "😀"]


@pytest.mark.parametrize("name", GOOD)
def test_rule_accepts(name: str) -> None:
    assert name_problem(name) is None
    assert check_knowledge_base_name(f" {name} ") == name


@pytest.mark.parametrize("name", BAD)
def test_rule_refuses(name: str) -> None:
    problem = name_problem(name)
    assert problem is not None and "knowledge base name" in problem
    assert "\x01" not in problem and "\n" not in problem  # a control character is shown escaped
    with pytest.raises(KnowledgeBaseNameError):
        check_knowledge_base_name(name)


def test_server_refuses_bad_names_with_400(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    app = create_app(svc, svc.settings, warm_up=False)
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        for name in ["a/b", "a\x01b", "x" * 200, ".."]:
            response = client.post("/v1/knowledge_bases", json={"name": name})
            assert response.status_code == 400, (name, response.text)
            error = response.json()["error"]
            assert error["code"] == "invalid_name" and error["param"] == "name"
            assert "knowledge base name" in error["message"]
        # An upload into a new knowledge base is a creation too: refused before any file is kept.
        upload = client.post("/v1/knowledge_bases/a%01b/documents", files=[("files", ("n.txt", b"note", "text/plain"))])
        assert upload.status_code == 400 and upload.json()["error"]["code"] == "invalid_name", upload.text
        long = client.post(f"/v1/knowledge_bases/{'y' * 200}/documents", files=[("files", ("n.txt", b"note"))])
        assert long.status_code == 400, long.text
        # a%2Fb reaches the server as a/b: no route, and no such knowledge base can be made any more.
        assert client.delete("/v1/knowledge_bases/a%2Fb").status_code == 404
        assert [kb["name"] for kb in client.get("/v1/knowledge_bases").json()["data"]] == ["default"]
        assert not any((svc.settings.data_dir / "uploads").glob("kbh-*"))
        # Good names of any script still work, and are reachable and deletable through the API.
        assert client.post("/v1/knowledge_bases", json={"name": "产品手册 v2"}).status_code == 201
        assert client.delete("/v1/knowledge_bases/%E4%BA%A7%E5%93%81%E6%89%8B%E5%86%8C%20v2").json()["deleted"]


def _rag(data: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--profile", "fake", "--data-dir", str(data), *args])


def _one_line(result: Any, code: int) -> str:
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines
    return lines[0]


def test_cli_refuses_bad_names_with_exit_2(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert "'/'" in _one_line(_rag(data, "kb", "create", "a/b"), 2)
    assert "at most 64" in _one_line(_rag(data, "kb", "create", "z" * 200), 2)
    assert "control character" in _one_line(_rag(data, "kb", "create", "a\x07b"), 2)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text(SMALL, encoding="utf-8")
    _one_line(_rag(data, "ingest", "-q", "--kb", "../up", str(docs)), 2)
    assert _rag(data, "kb", "list").stdout.startswith("No knowledge bases yet")


def test_existing_bad_names_stay_listable_and_deletable_in_the_cli(tmp_path: Path) -> None:
    """A knowledge base made before the rule (straight through ingest, as old versions did) is not stranded."""
    data = tmp_path / "data"
    settings = Settings.load(data_dir=data, profile="fake")
    create_knowledge_base(settings, "old/name")
    assert "old/name\t0 chunks" in _rag(data, "kb", "list").stdout
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text(SMALL, encoding="utf-8")
    assert _rag(data, "ingest", "-q", "--kb", "old/name", str(docs)).exit_code == 0  # still usable
    result = _rag(data, "kb", "delete", "-y", "old/name")
    assert result.exit_code == 0 and "Deleted knowledge base 'old/name'" in result.stdout, result.output


def test_app_says_why_a_new_name_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from streamlit.testing.v1 import AppTest

    settings_file = tmp_path / "rag_settings.toml"
    settings_file.write_text("", encoding="utf-8")
    monkeypatch.setenv("RAG_PROFILE", "fake")
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAG_SETTINGS_FILE", str(settings_file))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "streamlit_app.py"), default_timeout=60)
    at.run(timeout=60)
    at.switch_page("rag_app/ui/upload.py")
    at.run(timeout=60)
    assert not at.exception, at.exception
    at.text_input(key="kb_new").set_value("a/b")
    at.file_uploader[0].set_value([("n.txt", b"a note", "text/plain")])
    at.run(timeout=60)
    assert not at.exception, at.exception
    assert any("'/'" in str(e.value) for e in at.error), [e.value for e in at.error]
    assert next(b for b in at.button if b.label == "Ingest").disabled
