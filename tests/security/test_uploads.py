"""Issue 18, uploads: names that meet, zip amplification, spooling, a client gone mid-upload, kill -9.

Real requests against a real server on loopback: :class:`tests.servers.ServerThread` (uvicorn in this
process, so the test can look at the data directory and the process's memory) or a ``rag serve`` subprocess
(its own log, and a SIGKILL in the middle of a job)."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
import tracemalloc
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from langchain_core.embeddings import DeterministicFakeEmbedding

from rag_app.server.app import create_app
from rag_app.service import RagService
from rag_app.settings import Settings
from tests.servers import ServerThread, free_port

TEXT = "Uploads keep every file under a name of its own; nothing is lost, nothing silently replaced. "


def _zip(members: dict[str, bytes], level: int = 6) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=level) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buf.getvalue()


def _doc(tag: str) -> bytes:
    return f"{tag}: {TEXT * 3}".encode()


def _service(tmp_path: Path, **ingest: Any) -> RagService:
    settings = Settings.load(data_dir=tmp_path / "data", llm={"backend": "fake"}, ingest=ingest)
    return RagService(settings, embeddings=DeterministicFakeEmbedding(size=32))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[RagService, str]]:
    service = _service(tmp_path)
    with ServerThread(create_app(service, service.settings, warm_up=False)) as server:
        yield service, server.url


def _upload(url: str, kb: str, files: list[tuple[str, bytes]], **params: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/knowledge_bases/{kb}/documents", files=[("files", f) for f in files],
                      params=params, timeout=120)


def _kept(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- 1. names that meet ------------------------------------------------------------------------------------


def test_a_file_and_a_zip_of_its_name_in_one_batch_both_survive(served: tuple[RagService, str]) -> None:
    service, url = served
    response = _upload(url, "kb", [("a.txt", _doc("plain")), ("a.txt.zip", _zip({"inner.txt": _doc("zipped")}))])
    assert response.status_code == 200, response.text
    by_path = {f["path"]: f for f in response.json()["files"]}
    assert by_path["a.txt"]["status"] == "added"
    assert by_path["a (2).txt/inner.txt"]["status"] == "added"
    assert any("kept as 'a (2).txt'" in w for w in by_path["a (2).txt/inner.txt"]["warnings"]), by_path
    assert _kept(service.uploads_folder("kb")) == {"a.txt": _doc("plain"), "a (2).txt/inner.txt": _doc("zipped")}


def test_a_later_zip_never_replaces_an_earlier_file(served: tuple[RagService, str]) -> None:
    service, url = served
    assert _upload(url, "kb", [("report.txt", _doc("report"))]).status_code == 200
    later = _upload(url, "kb", [("report.txt.zip", _zip({"part.txt": _doc("part")}))]).json()
    assert [f["path"] for f in later["files"]] == ["report (2).txt/part.txt"]
    assert "a file of that name is kept already" in later["files"][0]["warnings"][0]
    sources = {r.source for r in service.documents("kb")}
    assert sources == {"report.txt", "report (2).txt/part.txt"}
    assert all(service.source_file(s, "kb") is not None for s in sources)  # every document keeps its file
    # The same zip uploaded again replaces its own folder, as a file uploaded again replaces its file.
    again = _upload(url, "kb", [("report.txt.zip", _zip({"part.txt": _doc("part v2")}))]).json()
    assert [f["path"] for f in again["files"]] == ["report (2).txt/part.txt"]
    assert _kept(service.uploads_folder("kb"))["report (2).txt/part.txt"] == _doc("part v2")


def test_a_zip_uploaded_again_leaves_no_document_without_its_file(served: tuple[RagService, str]) -> None:
    service, url = served
    _upload(url, "kb", [("bundle.zip", _zip({"a.txt": _doc("a"), "b.txt": _doc("b")}))])
    again = _upload(url, "kb", [("bundle.zip", _zip({"a.txt": _doc("a v2")}))]).json()
    assert again["pruned"] == ["bundle/b.txt"] and "1 document(s) pruned" in again["summary"]
    assert {r.source for r in service.documents("kb")} == {"bundle/a.txt"}
    assert _kept(service.uploads_folder("kb")) == {"bundle/a.txt": _doc("a v2")}


def test_zip_members_that_clean_to_one_name_both_survive(served: tuple[RagService, str]) -> None:
    service, url = served
    members = {"x.txt": _doc("x"), "x\x01.txt": _doc("x-ctrl"), "d/y.txt": _doc("dy"), "d\\y.txt": _doc("d-bs")}
    report = _upload(url, "kb", [("bundle.zip", _zip(members))]).json()
    assert sorted(f["path"] for f in report["files"] if f["status"] == "added") == [
        "bundle/d/y (2).txt", "bundle/d/y.txt", "bundle/x (2).txt", "bundle/x.txt"]
    kept = _kept(service.uploads_folder("kb"))
    assert sorted(kept.values()) == sorted(members.values())  # four files, none overwritten
    renamed = {f["path"]: f["warnings"] for f in report["files"] if f["warnings"]}
    assert set(renamed) == {"bundle/x (2).txt", "bundle/d/y (2).txt"}


# --- 2. amplification --------------------------------------------------------------------------------------


def _amplifying_zip() -> bytes:
    return _zip({f"m{i:03d}.txt": b"a" * (1 << 20) for i in range(150)}, level=9)


def test_an_amplifying_zip_is_refused_before_extracting_and_the_batch_goes_on(
    served: tuple[RagService, str],
) -> None:
    service, url = served
    bomb = _amplifying_zip()
    assert len(bomb) < 200_000
    start = time.perf_counter()
    response = _upload(url, "kb", [("bomb.zip", bomb), ("good.txt", _doc("good"))])
    seconds = time.perf_counter() - start
    assert response.status_code == 200, response.text
    by_path = {f["path"]: f for f in response.json()["files"]}
    assert by_path["good.txt"]["status"] == "added"
    assert by_path["bomb.zip"]["status"] == "failed"
    assert by_path["bomb.zip"]["reason"].startswith("bomb.zip: the archive inflates to 150 MB")
    assert "ingest.max_archive_ratio" in by_path["bomb.zip"]["reason"]
    assert _kept(service.uploads_folder("kb")) == {"good.txt": _doc("good")}
    assert seconds < 10, seconds  # was 23-40 s of the single worker and 150 MiB written


def test_the_archive_size_limit_is_a_setting_and_rag_ingest_applies_it_too(tmp_path: Path) -> None:
    members = {f"r{i}.txt": os.urandom(600_000).hex().encode()[:600_000] for i in range(2)}  # ~1.2 MB, ratio ~2
    data = _zip(members)
    service = _service(tmp_path, max_archive_mb=1)
    with ServerThread(create_app(service, service.settings, warm_up=False)) as server:
        refused = _upload(server.url, "kb", [("big.zip", data)])
    assert refused.status_code == 400 and "ingest.max_archive_mb (1 MB)" in refused.text, refused.text
    (tmp_path / "big.zip").write_bytes(data)
    from rag_app.cli import cli

    result = CliRunner().invoke(cli, ["--profile", "fake", "--data-dir", str(tmp_path / "cli"), "ingest",
                                      str(tmp_path / "big.zip")], env={"RAG_INGEST__MAX_ARCHIVE_MB": "1"})
    assert "ingest.max_archive_mb (1 MB)" in result.output, result.output


# --- 3. spooling -------------------------------------------------------------------------------------------


def test_queued_uploads_are_spooled_to_disk_and_streamed(served: tuple[RagService, str]) -> None:
    import threading

    service, url = served
    gate, started = threading.Event(), threading.Event()
    real = service.ingest_uploads

    def held(*args: Any, **kwargs: Any) -> Any:
        started.set()
        assert gate.wait(60)
        return real(*args, **kwargs)

    service.ingest_uploads = held  # type: ignore[method-assign]
    try:
        first = _upload(url, "kb", [("first.txt", _doc("first"))], wait="false").json()
        assert started.wait(30)
        payload = _doc("queued") + b"x" * (20 << 20)  # 20 MB, queued behind the first job
        (service.settings.data_dir.parent / "queued.txt").write_bytes(payload)
        with (service.settings.data_dir.parent / "queued.txt").open("rb") as fh:  # the client streams it too
            tracemalloc.start()
            queued = httpx.post(f"{url}/v1/knowledge_bases/kb/documents", files=[("files", ("queued.txt", fh))],
                                params={"wait": "false"}, timeout=120)
            _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert queued.status_code == 202, queued.text
        job = queued.json()
        spool = service.settings.data_dir / "spool" / job["id"]
        assert (spool / "0").read_bytes() == payload  # on disk while it waits, under data_dir
        assert peak < 8 << 20, f"{peak / 2**20:.1f} MiB allocated while receiving 20 MB"  # was the whole body
    finally:
        gate.set()
    for job_id in (first["id"], job["id"]):
        assert _poll(url, job_id)["status"] == "done"
    assert not spool.exists()  # the spool goes with the job


def test_an_upload_over_the_limit_stops_as_it_streams_and_leaves_nothing(tmp_path: Path) -> None:
    service = _service(tmp_path)
    settings = service.settings.model_copy(
        update={"server": service.settings.server.model_copy(update={"max_upload_mb": 1})})
    with ServerThread(create_app(service, settings, warm_up=False)) as server:

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            yield b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.txt\"\r\n\r\n"
            for _ in range(40):
                yield b"y" * (64 << 10)
            yield b"\r\n--b--\r\n"

        response = httpx.post(f"{server.url}/v1/knowledge_bases/kb/documents", content=chunks(),
                              headers={"content-type": "multipart/form-data; boundary=b"}, timeout=60)
    assert response.status_code == 413, response.text
    spool = service.settings.data_dir / "spool"
    assert not spool.exists() or list(spool.iterdir()) == []


# --- 4, 5. a real `rag serve`: a client gone mid-upload; kill -9 and a restart ----------------------------


def _serve(data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")} | {"HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "rag_app.cli", "--profile", "fake", "--data-dir", str(data_dir), "serve",
               "--port", str(port)]
    with log.open("ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(log.read_text(errors="replace")[-2000:])
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("rag serve did not start")


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    proc.send_signal(sig)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _poll(url: str, job_id: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=10).json()
        if job.get("status") in ("done", "failed") or time.monotonic() > deadline:
            return job
        time.sleep(0.1)


def test_a_client_gone_mid_upload_logs_one_warning_and_leaves_nothing(tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "serve.log"
    proc = _serve(tmp_path / "data", port, log)
    try:
        body = b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"half.txt\"\r\n\r\n" + b"z" * 300_000
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(
                b"POST /v1/knowledge_bases/kb/documents HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 5000000\r\n\r\n" % port + body)
            time.sleep(0.5)
        deadline = time.monotonic() + 10
        while "disconnected" not in log.read_text(errors="replace") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    finally:
        _stop(proc)
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
    assert len([line for line in text.splitlines() if "disconnected" in line]) == 1, text[-3000:]
    spool = tmp_path / "data" / "spool"
    assert not spool.exists() or list(spool.iterdir()) == []
    assert not (tmp_path / "data" / "uploads").exists() or _kept(tmp_path / "data" / "uploads") == {}


def test_kill_9_mid_job_then_restart_resumes_it_and_cleans_staging(tmp_path: Path) -> None:
    data, port, log = tmp_path / "data", free_port(), tmp_path / "serve.log"
    url = f"http://127.0.0.1:{port}"
    files = [(f"doc{i:04d}.txt", _doc(f"document {i}") * 20) for i in range(400)]
    proc = _serve(data, port, log)
    try:
        running = _upload(url, "kb", files, wait="false").json()
        queued = _upload(url, "kb", [("late.txt", _doc("late"))], wait="false").json()
        lost = _upload(url, "kb", [("lost.txt", _doc("lost"))], wait="false").json()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            job = httpx.get(f"{url}/v1/jobs/{running['id']}", timeout=10).json()
            if job["status"] == "running" and (job["progress"] or {}).get("files_done", 0) > 0:
                break
            time.sleep(0.02)
        assert job["status"] == "running", job
    finally:
        _stop(proc, signal.SIGKILL)
    folder = next((data / "uploads").iterdir())
    # What a kill during staging leaves: a staging folder of a process that is gone (and one of the old form).
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (folder / f".staging-{dead.stdout.strip()}-abc" / "0").mkdir(parents=True)
    old = folder / ".staging-xyz"
    old.mkdir()
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    import shutil

    shutil.rmtree(data / "spool" / lost["id"])  # a job whose spooled files are gone cannot be resumed

    proc = _serve(data, port, log)
    try:
        done = _poll(url, running["id"])
        assert done["status"] == "done" and done["attempts"] == 2, done
        assert _poll(url, queued["id"])["status"] == "done"
        failed = _poll(url, lost["id"])
        assert failed["status"] == "failed" and "upload them again" in failed["error"], failed
        kb = httpx.get(f"{url}/v1/knowledge_bases/kb/documents", timeout=30).json()["data"]
        assert {d["source"] for d in kb} == {name for name, _ in files} | {"late.txt"}
        assert not [p for p in folder.iterdir() if p.name.startswith(".staging-")]
        assert list((data / "spool").iterdir()) == []
    finally:
        _stop(proc)
    # And after a clean restart, the ended jobs are still there to query.
    proc = _serve(data, port, log)
    try:
        assert httpx.get(f"{url}/v1/jobs/{running['id']}", timeout=10).json()["status"] == "done"
    finally:
        _stop(proc)
