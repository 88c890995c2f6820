"""How long the quick commands take: ``python -c pass``, ``rag kb list`` and a no-op ``rag ingest`` (issue 12).

Run: ``.venv/bin/python bench/quiet_commands.py [--runs 5] [--files 120] [--src LABEL=PATH …]``; prints a
Markdown table (median wall and CPU = user + sys of the child, from ``wait4``) and what each command costs
above ``python -c pass``.

Every command is a fresh ``python -m rag_app.cli`` with the code of ``--src`` first on ``PYTHONPATH`` (default:
this checkout; ``git archive REV | tar -x -C DIR`` gives another revision to compare). Its bytecode is cached
in a temporary folder (``PYTHONPYCACHEPREFIX``) and each command runs once unmeasured first, as an installed
package's would be. The data directory is made by that code: the files ingested once with vectors from a
stand-in embedder recorded as the configured one (MiniLM), so setting up takes seconds instead of the model's
minutes; the measured commands never embed.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, git_rev, machine  # noqa: E402

SETUP = textwrap.dedent(
    """
    import sys
    from langchain_core.embeddings import DeterministicFakeEmbedding
    import ingest.embed as embed
    from rag_app.service import RagService
    from rag_app.settings import Settings

    class MiniLMStandIn(DeterministicFakeEmbedding):
        @property
        def identity(self):
            return "all-MiniLM-L6-v2", self.size

    embed.build_embeddings = lambda *a, **k: MiniLMStandIn(size=384)
    report = RagService(Settings.load(data_dir=sys.argv[1], ingest={"ocr": "off"})).ingest([sys.argv[2]])
    assert not report.failed, report.summary()
    """
)
WORDS = "retrieval index chunk embed manual guide import export setting answer question store model".split()
HANZI = "文档导入设置答案问题知识库检索索引模型向量切分引用本地"


def make_folder(folder: Path, files: int) -> None:
    """``files`` small documents, a third of them Chinese Markdown."""
    rng = random.Random(12)
    folder.mkdir(parents=True)
    for i in range(files):
        if i % 3 == 0:
            text = "".join(rng.choice(HANZI) for _ in range(300))
            (folder / f"doc{i:03d}.md").write_text(f"# 第 {i} 节\n\n{text}。\n", encoding="utf-8")
        else:
            (folder / f"doc{i:03d}.txt").write_text(" ".join(rng.choice(WORDS) for _ in range(250)) + ".\n")


def run(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) of one run; fails loudly if the command does."""
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            out.seek(0)
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out.read().decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime


def measure(label: str, src: Path, work: Path, runs: int, files: int) -> list[tuple[str, str, float, float]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_") and k != "PYTHONDONTWRITEBYTECODE"}
    env |= {"PYTHONPATH": str(src), "PYTHONPYCACHEPREFIX": str(work / "pycache"), "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1"}
    data, folder = work / f"data-{label}", work / "docs"
    if not folder.exists():
        make_folder(folder, files)
    subprocess.run([sys.executable, "-c", SETUP, str(data), str(folder)], env=env, cwd=work, check=True)
    rag = [sys.executable, "-m", "rag_app.cli", "--data-dir", str(data)]
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "rag kb list": [*rag, "kb", "list"],
        f"rag ingest DIR (no-op, {files} files)": [*rag, "ingest", str(folder)],
    }
    rows = []
    for name, cmd in commands.items():
        run(cmd, env, work)  # bytecode cached, the data dir's record made: as every later run finds them
        times = [run(cmd, env, work) for _ in range(runs)]
        rows.append((label, name, statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--files", type=int, default=120)
    parser.add_argument("--src", action="append", default=[], metavar="LABEL=PATH",
                        help="code to measure (repeatable); default: this checkout")
    args = parser.parse_args()
    sources = [tuple(s.split("=", 1)) for s in args.src] or [(f"{git_rev()}+working tree", str(REPO))]
    rows = []
    with tempfile.TemporaryDirectory(prefix="quiet-bench-") as tmp:
        for label, path in sources:
            rows += measure(label, Path(path).resolve(), Path(tmp), args.runs, args.files)
    load = os.getloadavg()[0]
    print(f"{machine()}; load average {load:.1f}; median of {args.runs} runs\n")
    print("| code | command | wall | CPU (user+sys) | wall above `python -c pass` | CPU above |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    base = {label: (wall, cpu) for label, name, wall, cpu in rows if name == "python -c pass"}
    for label, name, wall, cpu in rows:
        above = "" if name == "python -c pass" else f"{wall - base[label][0]:.2f} s"
        above_cpu = "" if name == "python -c pass" else f"{cpu - base[label][1]:.2f} s"
        print(f"| {label} | `{name}` | {wall:.2f} s | {cpu:.2f} s | {above} | {above_cpu} |")


if __name__ == "__main__":
    main()
