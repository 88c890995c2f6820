"""Crash safety and concurrency, with real processes: ``kill -9`` mid-ingestion, two writers, a live reader.

The subprocesses ingest with a deterministic fake embedder that sleeps a little per batch, so that there
is time to kill them in the middle of writing; the store is then checked against the files.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from langchain_core.embeddings import Embeddings

from ingest.manifest import Manifest
from ingest.pipeline import chunk_id, ingest_paths
from ingest.store import KnowledgeBase, open_client
from tests.test_ingest_pipeline import contents, settings_for

REPO = Path(__file__).resolve().parent.parent

WORKER = textwrap.dedent(
    """
    import sys, time
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from ingest.pipeline import ingest_paths
    from rag_app.settings import Settings

    class SlowFake(DeterministicFakeEmbedding):
        def embed_documents(self, texts):
            time.sleep(float(sys.argv[3]))
            return super().embed_documents(texts)

    data_dir, folder, _delay, kb = sys.argv[1:5]
    settings = Settings.load(
        data_dir=data_dir, llm={"backend": "fake"}, embedding={"backend": "fake"},
        ingest={"chunk_size": 40, "chunk_overlap": 5, "embed_batch": 16, "prefetch_files": 2},
    )

    def progress(event):
        if event.stage == "waiting":
            print("WAITING", event.message, flush=True)
        elif event.stage == "chunks":
            print("CHUNKS", event.chunks_done, flush=True)

    report = ingest_paths(settings, [folder], embeddings=SlowFake(size=32), knowledge_base=kb, progress=progress)
    print("DONE", report.chunks_added, len(report.failed), flush=True)
    """
)


def start_worker(data_dir: Path, folder: Path, delay: float = 0.02, kb: str = "default") -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(data_dir), str(folder), str(delay), kb],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )


def make_corpus(folder: Path, files: int, paragraphs: int = 12, tag: str = "") -> Path:
    """Files of several chunks each (chunk_size 40 tokens), every file different."""
    folder.mkdir(parents=True)
    for i in range(files):
        lines = [
            f"Document {tag}{i} paragraph {j}: the quick brown fox number {i * 100 + j} jumps over the lazy dog. "
            f"知识库第{i}号文件的第{j}段，内容各不相同。"
            for j in range(paragraphs)
        ]
        (folder / f"doc{i:03d}.txt").write_text("\n\n".join(lines), encoding="utf-8")
    return folder


def visible_state(settings: Any, embeddings: Embeddings, kb_name: str = "default") -> dict[str, int]:
    """What a reader sees: chunks per content hash, after the reader filter. Checks all-or-nothing."""
    kb = KnowledgeBase(open_client(settings.data_dir), kb_name, embeddings)
    got = kb._collection.get(where=kb.reader_filter(), include=["metadatas"])
    per_sha: dict[str, set[str]] = {}
    for id_, meta in zip(got["ids"], got["metadatas"], strict=True):
        per_sha.setdefault(str(meta["sha256"]), set()).add(id_)
    assert kb.manifest is not None
    complete = {r.sha256: r for r in kb.manifest.records(kb.collection_name) if not r.is_alias}
    for sha, ids in per_sha.items():
        assert sha in complete, "a reader sees chunks of a document that is not complete"
        assert ids == {chunk_id(sha, i) for i in range(complete[sha].chunks)}, "a reader sees half a document"
    return {sha: len(ids) for sha, ids in per_sha.items()}


def wait_for_line(proc: subprocess.Popen[str], prefix: str, timeout: float = 60) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            err = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"worker ended before {prefix!r}: {err[-2000:]}")
        if line.startswith(prefix):
            return line
    raise AssertionError(f"no {prefix!r} from the worker within {timeout} s")


@pytest.mark.parametrize("extra_delay", [0.0, 0.3])
def test_kill_9_mid_ingestion_then_ingest_again(
    tmp_path: Path, fake_embeddings: Embeddings, extra_delay: float
) -> None:
    folder = make_corpus(tmp_path / "corpus", files=30)
    settings = settings_for(tmp_path / "data", embed_batch=16)
    proc = start_worker(settings.data_dir, folder)
    try:
        wait_for_line(proc, "CHUNKS")  # at least one batch is in the store
        time.sleep(extra_delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    # Readers see whole documents only, even now.
    seen = visible_state(settings, fake_embeddings)
    raw = KnowledgeBase(open_client(settings.data_dir), "default", fake_embeddings).count()
    assert raw > 0 and len(seen) < 30, "the kill came too late or too early to test anything"
    manifest = Manifest(settings.data_dir)
    # Ingest again: the interrupted document is cleaned up, the rest completed, nothing twice.
    report = ingest_paths(settings, [folder], embeddings=fake_embeddings)
    assert not report.failed
    assert {f.status for f in report.files} <= {"added", "unchanged"}
    assert len(report.by_status("unchanged")) == len(seen), "complete documents are not embedded again"
    if raw > sum(seen.values()):
        assert report.recovered, "chunks of the interrupted document(s) were left"
    assert manifest.records("kb-default", states=("pending", "deleting")) == []
    fresh = settings_for(tmp_path / "fresh")
    ingest_paths(fresh, [folder], embeddings=fake_embeddings)
    kb = KnowledgeBase(open_client(settings.data_dir), "default", fake_embeddings)
    assert contents(kb) == contents(KnowledgeBase(open_client(fresh.data_dir), "default", fake_embeddings))
    assert kb.count() == sum(r.chunks for r in manifest.records("kb-default"))
    assert len(visible_state(settings, fake_embeddings)) == 30


def test_interrupted_document_is_hidden_and_recovered(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    """The same guarantees, deterministic: an exception in the middle of writing a document's chunks."""
    folder = make_corpus(tmp_path / "corpus", files=3, paragraphs=20)
    settings = settings_for(tmp_path / "data", embed_batch=4)

    class Exploding(Embeddings):
        calls = 0

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            self.calls += 1
            if self.calls == 3:
                raise KeyboardInterrupt  # like Ctrl-C in the middle of the first document
            return fake_embeddings.embed_documents(texts)

        def embed_query(self, text: str) -> list[float]:
            return fake_embeddings.embed_query(text)

    with pytest.raises(KeyboardInterrupt):
        ingest_paths(settings, [folder], embeddings=Exploding())
    kb = KnowledgeBase(open_client(settings.data_dir), "default", fake_embeddings)
    assert kb.count() > 0, "some chunks of the first document were written"
    assert visible_state(settings, fake_embeddings) == {}, "readers must not see the half document"
    report = ingest_paths(settings, [folder], embeddings=fake_embeddings)
    assert report.recovered == ["corpus/doc000.txt"]
    assert [f.status for f in report.files] == ["added"] * 3
    assert len(visible_state(settings, fake_embeddings)) == 3


def test_two_processes_wait_for_each_other(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    a = make_corpus(tmp_path / "a", files=6, tag="a")
    b = make_corpus(tmp_path / "b", files=6, tag="b")
    data = tmp_path / "data"
    first = start_worker(data, a, delay=1.0)  # slow enough to still be writing when the second starts
    try:
        wait_for_line(first, "CHUNKS")
        second = start_worker(data, b, delay=0.0)
        try:
            waiting = wait_for_line(second, "WAITING")
            assert "busy" in waiting and f"process {first.pid}" in waiting and "waiting" in waiting
            assert first.wait(timeout=120) == 0
            assert second.wait(timeout=120) == 0
            out = second.stdout.read() if second.stdout else ""
            assert "DONE" in out
        finally:
            if second.poll() is None:
                second.kill()
    finally:
        if first.poll() is None:
            first.kill()
    settings = settings_for(data)
    seen = visible_state(settings, fake_embeddings)
    assert len(seen) == 12
    kb = KnowledgeBase(open_client(data), "default", fake_embeddings)
    total = kb.count()
    assert total == sum(seen.values())
    # every vector is in the index: a query for all of them returns all of them
    hits = kb._collection.query(query_embeddings=[fake_embeddings.embed_query("fox")], n_results=total)
    assert len(set(hits["ids"][0])) == total


def test_long_running_reader_sees_other_process_writes(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    from rag_app.retrieve import KnowledgeBaseRetriever

    first = make_corpus(tmp_path / "first", files=2, tag="first")
    settings = settings_for(tmp_path / "data")
    ingest_paths(settings, [first], embeddings=fake_embeddings)
    kb = KnowledgeBase(open_client(settings.data_dir), "default", fake_embeddings)
    retriever = KnowledgeBaseRetriever(knowledge_base=kb, k=200)
    before = {d.metadata["source"] for d in retriever.invoke("fox")}
    assert before == {"first/doc000.txt", "first/doc001.txt"}
    second = make_corpus(tmp_path / "second", files=2, tag="second")
    proc = start_worker(settings.data_dir, second, delay=0.0)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    after = {d.metadata["source"] for d in retriever.invoke("fox")}
    assert after == before | {"second/doc000.txt", "second/doc001.txt"}
    # and a deletion by another process disappears too
    code = (
        "import sys; from ingest.documents import delete_documents; from rag_app.settings import Settings;"
        "delete_documents(Settings.load(data_dir=sys.argv[1]), 'default', ['first/doc000.txt'])"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(settings.data_dir)],
        check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
    )
    final = {d.metadata["source"] for d in retriever.invoke("fox")}
    assert final == after - {"first/doc000.txt"}
