"""Ingestion jobs for uploads, to wait for or to poll (``GET /v1/jobs/{id}``).

The files go to :meth:`rag_app.service.RagService.ingest_uploads`, which keeps them under safe names in
``data_dir/uploads/`` (no crafted name escapes that folder) and ingests them. Jobs run one at a time (ingestion
is one writer per data directory anyway) in a background thread; a job records the latest progress event
and, at the end, the same per-file report the CLI prints.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rag_app.errors import RagError

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
    """One ingestion, as ``GET /v1/jobs/{id}`` shows it."""

    id: str
    knowledge_base: str
    files: list[str]
    status: str = "queued"  # queued → running → done | failed
    progress: dict[str, Any] | None = None
    report: dict[str, Any] | None = None
    error: str | None = None
    created: float = dataclasses.field(default_factory=time.time)
    future: Future[Any] | None = dataclasses.field(default=None, repr=False)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id, "object": "ingest.job", "knowledge_base": self.knowledge_base, "files": self.files,
            "status": self.status, "progress": self.progress, "report": self.report, "error": self.error,
            "created": int(self.created),
        }


class Jobs:
    """Ingestion jobs, run one at a time in a background thread; the last ``keep`` stay visible."""

    def __init__(self, keep: int = 200) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rag-ingest")
        self.keep = keep

    def submit(
        self, service: Any, knowledge_base: str, files: list[tuple[str, bytes]], passwords: dict[str, str]
    ) -> Job:
        job = Job(uuid.uuid4().hex, knowledge_base, [name for name, _ in files])

        def progress(event: Any) -> None:
            job.progress = to_jsonable(event)

        def run() -> dict[str, Any]:
            job.status = "running"
            try:
                report = service.ingest_uploads(
                    files, knowledge_base=knowledge_base, progress=progress, passwords=passwords
                )
            except RagError as exc:
                job.status, job.error = "failed", exc.friendly()
                raise
            except Exception as exc:  # reported on the job; the server keeps serving
                job.status, job.error = "failed", f"ingestion failed: {type(exc).__name__}"
                raise
            job.report = report_json(report)
            job.status = "done"
            return job.report

        with self._lock:
            self._jobs[job.id] = job
            for old in list(self._jobs)[: max(0, len(self._jobs) - self.keep)]:
                if self._jobs[old].status in ("done", "failed"):
                    del self._jobs[old]
        job.future = self._executor.submit(run)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
