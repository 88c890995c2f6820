"""The built wheel carries what an installed copy needs outside the repo: templates, profiles, py.typed."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
        check=True, capture_output=True, timeout=300,
    )
    (built,) = out.glob("rag_app-*.whl")
    return built


def test_wheel_contains_templates_and_profiles(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = {p.name for p in (REPO / "prompts").glob("*.txt")}
    assert templates and {f"rag_app/prompts/{t}" for t in templates} <= names
    assert {"rag_app/profiles.toml", "rag_app/py.typed", "ingest/py.typed"} <= names


def test_installed_wheel_works_outside_the_repo(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True, capture_output=True, timeout=300,
    )
    code = (
        f"import sys; sys.path.insert(0, {str(target)!r}); import rag_app; "
        "from rag_app.prompting import load_prompt; from rag_app.settings import Settings; "
        "print(rag_app.__file__); print(load_prompt('format_llama2_chat')); "
        "print(Settings.load(profile='chinese-alpaca-2').llm.prompt_format)"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith(str(target))
    assert "[INST] <<SYS>>" in run.stdout and lines[-1] == "llama2-chat"


def test_every_package_folder_is_listed() -> None:
    """A sub-package left out of pyproject's list works in the editable checkout and is missing from the wheel."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(REPO).parts)
        for top in ("rag_app", "ingest")
        for init in (REPO / top).rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
