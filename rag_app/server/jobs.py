"""Ingestion jobs for uploads, to wait for or to poll (``GET /v1/jobs/{id}``).

The files (spooled to disk as they arrived, :mod:`rag_app.server.spool`) go to
:meth:`rag_app.service.RagService.ingest_uploads`, which keeps them under safe names in ``data_dir/uploads/``
(no crafted name escapes that folder) and ingests them. Jobs run one at a time (ingestion is one writer per
data directory anyway) in a background thread; a job records the latest progress event and, at the end, the
same per-file report the CLI prints. Jobs are kept on disk and survive a restart (:class:`Jobs`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rag_app.errors import RagError

logger = logging.getLogger(__name__)


def to_jsonable(obj: Any) -> Any:
    """Dataclasses (reports, records, progress events) as plain JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: to_jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def report_json(report: Any) -> dict[str, Any]:
    """An ingestion report as JSON, with the counts and the one-line summary the CLI prints."""
    out: dict[str, Any] = to_jsonable(report)
    out["summary"] = report.summary()
    out["counts"] = {"ok": len(report.ok), "skipped": len(report.skipped), "failed": len(report.failed)}
    out["chunks_unchanged"] = report.chunks_unchanged
    return out


@dataclasses.dataclass
class Job:
    """One ingestion, as ``GET /v1/jobs/{id}`` shows it (and as ``<data_dir>/jobs/<id>.json`` keeps it)."""

    id: str
    knowledge_base: str
    files: list[str]
    status: str = "queued"  # queued → running → done | failed
    progress: dict[str, Any] | None = None
    report: dict[str, Any] | None = None
    error: str | None = None
    created: float = dataclasses.field(default_factory=time.time)
    #: How many times it was started: more than one after a server stopped in the middle of it.
    attempts: int = 0
    #: The server process that runs it (a restarted server resumes a job only when that one is gone).
    pid: int = dataclasses.field(default_factory=os.getpid)
    future: Future[Any] | None = dataclasses.field(default=None, repr=False)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id, "object": "ingest.job", "knowledge_base": self.knowledge_base, "files": self.files,
            "status": self.status, "progress": self.progress, "report": self.report, "error": self.error,
            "created": int(self.created), "attempts": self.attempts,
        }

    def saved(self) -> dict[str, Any]:
        return self.public() | {"created": self.created, "pid": self.pid}

    @classmethod
    def load(cls, data: dict[str, Any]) -> Job:
        return cls(
            id=str(data["id"]), knowledge_base=str(data["knowledge_base"]), files=[str(f) for f in data["files"]],
            status=str(data["status"]), progress=data.get("progress"), report=data.get("report"),
            error=data.get("error"), created=float(data.get("created", 0)), attempts=int(data.get("attempts", 0)),
            pid=int(data.get("pid", 0)),
        )


JOB_ID = re.compile(r"[0-9a-f]{32}")
#: A job interrupted this many times (the server stopped while it ran) is reported failed, not run again.
MAX_ATTEMPTS = 3
PASSWORDS_FILE = "passwords.json"
#: The id of the process that spooled an upload (a restarted server leaves another live server's alone).
OWNER_FILE = "owner"
#: Jobs some app of this process runs or queues (two apps of one process on one data directory: tests).
_in_process: set[str] = set()


class Jobs:
    """Ingestion jobs, run one at a time in a background thread; the last ``keep`` stay visible.

    Durable (issue 18): a job's uploaded files are spooled to ``<data_dir>/spool/<id>/`` as they arrive (never
    kept in memory while the job waits), and its state is written atomically to ``<data_dir>/jobs/<id>.json``
    at each change, so that ``GET /v1/jobs/{id}`` survives a restart and :meth:`recover` (at a server's start)
    resumes a job that a killed server left queued or running, or reports it failed with the reason.
    """

    def __init__(self, data_dir: Path, keep: int = 200) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rag-ingest")
        self.keep = keep
        self.jobs_dir = Path(data_dir) / "jobs"
        self.spool_dir = Path(data_dir) / "spool"

    # --- spooling an upload ------------------------------------------------------------------------------

    def open_spool(self) -> tuple[str, Path]:
        """A new job id and the folder its upload streams into."""
        job_id = uuid.uuid4().hex
        folder = self.spool_dir / job_id
        folder.mkdir(parents=True)
        (folder / OWNER_FILE).write_text(str(os.getpid()), encoding="utf-8")
        return job_id, folder

    def discard_spool(self, job_id: str) -> None:
        """Remove a spool folder (an upload that was not completed, or a job that has ended)."""
        if JOB_ID.fullmatch(job_id):
            shutil.rmtree(self.spool_dir / job_id, ignore_errors=True)

    # --- running ------------------------------------------------------------------------------------------

    def submit(
        self, service: Any, knowledge_base: str, job_id: str, files: list[tuple[str, Path]],
        passwords: dict[str, str],
    ) -> Job:
        """Queue the ingestion of files spooled by :meth:`open_spool` (``files``: name as uploaded → file)."""
        if passwords:  # kept beside the files, for a resumed job; gone with them
            path = self.spool_dir / job_id / PASSWORDS_FILE
            path.touch(mode=0o600)
            path.write_text(json.dumps(passwords), encoding="utf-8")
        return self._start(service, Job(job_id, knowledge_base, [name for name, _ in files]))

    def _start(self, service: Any, job: Job) -> Job:
        spool = self.spool_dir / job.id
        files = [(name, spool / str(i)) for i, name in enumerate(job.files)]
        passwords = _read_passwords(spool / PASSWORDS_FILE)
        last_saved = 0.0

        def progress(event: Any) -> None:
            nonlocal last_saved
            job.progress = to_jsonable(event)
            if time.monotonic() - last_saved > 1:  # what a restart reports, at most once a second
                last_saved = time.monotonic()
                self._save(job)

        def run() -> dict[str, Any]:
            job.status, job.pid = "running", os.getpid()
            job.attempts += 1
            self._save(job)
            try:
                report = service.ingest_uploads(
                    files, knowledge_base=job.knowledge_base, progress=progress, passwords=passwords
                )
            except RagError as exc:
                job.status, job.error = "failed", exc.friendly()
                raise
            except Exception as exc:  # reported on the job; the server keeps serving
                job.status, job.error = "failed", f"ingestion failed: {type(exc).__name__}"
                raise
            finally:
                if job.status == "failed":
                    self._end(job)
            job.report = report_json(report)
            job.status = "done"
            self._end(job)
            return job.report

        with self._lock:
            self._jobs[job.id] = job
            _in_process.add(job.id)
            for old in list(self._jobs)[: max(0, len(self._jobs) - self.keep)]:
                if self._jobs[old].status in ("done", "failed"):
                    del self._jobs[old]
        self._save(job)
        job.future = self._executor.submit(run)
        return job

    def _end(self, job: Job) -> None:
        self._save(job)
        self.discard_spool(job.id)
        _in_process.discard(job.id)

    def get(self, job_id: str) -> Job | None:
        """A job of this server's, or one a job file keeps (one that ended before a restart)."""
        with self._lock:
            found = self._jobs.get(job_id)
        if found is not None or not JOB_ID.fullmatch(job_id):
            return found
        try:
            return Job.load(json.loads((self.jobs_dir / f"{job_id}.json").read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def shutdown(self) -> None:
        """Stop taking jobs: the queued ones stay queued on disk, for the next start to resume."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            _in_process.difference_update(j.id for j in self._jobs.values() if j.status == "queued")

    # --- on disk ------------------------------------------------------------------------------------------

    def _save(self, job: Job) -> None:
        """Write the job's file atomically (a temporary file renamed over it): never half a JSON."""
        try:
            with self._lock:
                self.jobs_dir.mkdir(parents=True, exist_ok=True)
                target = self.jobs_dir / f"{job.id}.json"
                tmp = target.with_suffix(".json.tmp")
                with tmp.open("w", encoding="utf-8") as fh:
                    json.dump(job.saved(), fh, ensure_ascii=False)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, target)
        except OSError as exc:  # the job still runs; only a restart would not know it
            logger.warning("could not record ingestion job %s: %s", job.id, exc.strerror or exc)

    def recover(self, service: Any) -> None:
        """At a server's start: remove the staging folders and spooled uploads that a killed process left, and
        resume each job it left queued or running (its files are spooled), or report it failed with the
        reason; then keep only the newest ``keep`` ended jobs' files. Never stops the server from starting."""
        from rag_app.uploads import clean_all_staging, process_alive

        try:
            if hasattr(service, "uploads_folder"):
                clean_all_staging(Path(service.uploads_folder()).parent)
            saved: list[Job] = []
            for path in sorted(self.jobs_dir.glob("*.json")) if self.jobs_dir.is_dir() else []:
                try:
                    saved.append(Job.load(json.loads(path.read_text(encoding="utf-8"))))
                except (OSError, ValueError, KeyError, TypeError):
                    logger.warning("ignored the unreadable job file %s", path.name)
            keep: set[str] = set()
            for job in sorted(saved, key=lambda j: j.created):
                if job.status not in ("queued", "running"):
                    continue
                keep.add(job.id)
                ours = job.pid == os.getpid() and job.id not in _in_process
                if ours or not process_alive(job.pid):  # else another server (or app) runs it
                    self._resume(service, job)
            for folder in self.spool_dir.iterdir() if self.spool_dir.is_dir() else []:
                owner = _owner(folder)
                if folder.name in keep or (owner not in (None, os.getpid()) and process_alive(owner or 0)):
                    continue  # an upload another server on this data directory is receiving
                shutil.rmtree(folder, ignore_errors=True)
                logger.warning("removed the spooled upload %s, left by a server that was stopped", folder.name)
            ended = sorted((j for j in saved if j.status in ("done", "failed")), key=lambda j: j.created)
            for job in ended[: max(0, len(ended) - self.keep)]:
                (self.jobs_dir / f"{job.id}.json").unlink(missing_ok=True)
        except Exception:  # a start must not fail over leftovers
            logger.exception("could not recover interrupted uploads")

    def _resume(self, service: Any, job: Job) -> None:
        spool = self.spool_dir / job.id
        missing = [name for i, name in enumerate(job.files) if not (spool / str(i)).is_file()]
        if missing or job.attempts >= MAX_ATTEMPTS:
            job.status = "failed"
            job.error = (
                f"the server stopped during this ingestion and its uploaded files are gone ({missing[0]}…): "
                "upload them again" if missing else
                f"the server stopped during this ingestion {job.attempts} times: upload the files again, "
                "fewer at a time"
            )
            logger.warning("ingestion job %s: %s", job.id, job.error)
            with self._lock:
                self._jobs[job.id] = job
            self._end(job)
            return
        logger.warning("resuming ingestion job %s (%d file(s)), interrupted when the server stopped",
                       job.id, len(job.files))
        job.status = "queued"
        self._start(service, job)


def _owner(folder: Path) -> int | None:
    try:
        return int((folder / OWNER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _read_passwords(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
