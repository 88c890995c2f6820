"""The README's promises: its library example runs as is, and its two commands are what CI runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")


def test_readme_starts_with_the_two_commands() -> None:
    first_block = re.search(r"```bash\n(.*?)```", README, re.S)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines() if line.strip()]
    assert commands == ["make run", "make test"]
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_library_example_runs_as_is(tmp_path: Path) -> None:
    """Run the README's Python example in a fresh interpreter (fake profile: no model loads)."""
    example = re.search(r"```python\n(.*?)```", README, re.S)
    assert example is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(RAG_PROFILE="fake", RAG_DATA_DIR=str(tmp_path / "data"))
    ingest = subprocess.run(
        [sys.executable, "-m", "rag_app.cli", "ingest", "-q", str(REPO / "samples" / "guide")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert ingest.returncode == 0, ingest.stderr
    run = subprocess.run(
        [sys.executable, "-c", example.group(1)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    assert "This is a fake answer." in run.stdout
    assert "[1] guide/user-guide" in run.stdout
