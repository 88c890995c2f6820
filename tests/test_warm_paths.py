"""Warm paths (issue 20): a real ``rag serve`` subprocess announces itself in its data dir, and ``rag ask`` on
that data dir answers through it (saying so on stderr) instead of loading models; stale announcements, a
missing key and ``--local`` make it work locally. Fake models on both sides, different canned answers, so
the answer tells who gave it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from rag_app.cli import cli
from rag_app.discovery import FILE_NAME
from tests.servers import free_port, running_server

SERVER_ANSWER = "Answered by the warm server."
LOCAL_ANSWER = "Answered in this process."
KEY = "warm-paths-key-of-24-chars"


def ask(data: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    env = {"RAG_LLM__FAKE_RESPONSES": json.dumps([LOCAL_ANSWER]), **(env or {})}
    return CliRunner().invoke(
        cli, ["--profile", "fake", "--data-dir", str(data), "ask", "--hide-source", *args], env=env
    )


def _ingested(tmp: Path) -> Path:
    (tmp / "docs").mkdir()
    (tmp / "docs" / "cats.md").write_text("# Cats\n\nCats purr when they are content.\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["--profile", "fake", "--data-dir", str(tmp / "data"), "ingest", "-q",
                                      str(tmp / "docs")])
    assert result.exit_code == 0, result.output
    return tmp / "data"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data dir of the module's server."""
    return _ingested(tmp_path_factory.mktemp("warm"))


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data dir of its own, no server on it."""
    return _ingested(tmp_path)


def _serve(data: Path, *extra: str) -> tuple[list[str], str, dict[str, str]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env["RAG_LLM__FAKE_RESPONSES"] = json.dumps([SERVER_ANSWER])
    command = [sys.executable, "-m", "rag_app.cli", "--profile", "fake", "--data-dir", str(data), "serve",
               "--port", str(port), *extra]
    return command, f"http://127.0.0.1:{port}", env


@pytest.fixture(scope="module")
def server(served: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("log") / "serve.log"
    command, url, env = _serve(served)
    with running_server(command, f"{url}/readyz", log, timeout=120, env=env):
        yield url
    assert not (served / FILE_NAME).exists(), "a cleanly stopped server leaves no announcement"


def test_serve_announces_itself_in_its_data_dir(server: str, served: Path) -> None:
    info = json.loads((served / FILE_NAME).read_text(encoding="utf-8"))
    assert f"http://{info['host']}:{info['port']}" == server
    assert info["needs_key"] is False and info["pid"] > 0 and info["started"] <= time.time()
    assert info["pid"] != os.getpid()


def test_ask_uses_the_running_server(server: str, served: Path) -> None:
    result = ask(served, "Do cats purr?")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == SERVER_ANSWER
    notes = [line for line in result.stderr.splitlines() if line.strip()]
    assert notes[0] == f"using the server at {server} (already loaded; --local to load the models here)"
    assert not any("server" in line for line in notes[1:])  # the rest: the support check's notice


def test_opt_out_works_locally(server: str, served: Path) -> None:
    for result in (ask(served, "--local", "Do cats purr?"),
                   ask(served, "Do cats purr?", env={"RAG_USE_RUNNING_SERVER": "false"})):
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == LOCAL_ANSWER
        assert "using the server" not in result.stderr


def test_stale_announcements_are_ignored(data: Path, tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    silent_port = free_port()  # nothing listens there
    for pid, port in ((gone.pid, free_port()), (os.getpid(), silent_port)):
        info = {"pid": pid, "host": "127.0.0.1", "port": port, "started": time.time(), "needs_key": False,
                "profile": "fake"}
        (data / FILE_NAME).write_text(json.dumps(info), encoding="utf-8")
        try:
            start = time.monotonic()
            result = ask(data, "Do cats purr?")
            assert result.exit_code == 0, result.output
            assert result.stdout.strip() == LOCAL_ANSWER
            assert "using the server" not in result.stderr and "note:" not in result.stderr
            assert time.monotonic() - start < 30
        finally:
            (data / FILE_NAME).unlink()


def test_server_with_keys_needs_this_users_key(data: Path, tmp_path: Path) -> None:
    command, url, env = _serve(data, "--api-key", KEY)
    with running_server(command, f"{url}/readyz", tmp_path / "serve.log", timeout=120, env=env):
        text = (data / FILE_NAME).read_text(encoding="utf-8")
        assert KEY not in text and json.loads(text)["needs_key"] is True

        without = ask(data, "Do cats purr?")
        assert without.exit_code == 0, without.output
        assert without.stdout.strip() == LOCAL_ANSWER
        assert without.stderr.splitlines()[0] == (
            f"note: the server at {url} needs an API key (set server_api_key); working locally"
        )

        wrong = ask(data, "Do cats purr?", env={"RAG_SERVER_API_KEY": "not-the-key-but-long-enough"})
        assert wrong.stdout.strip() == LOCAL_ANSWER and "refused server_api_key" in wrong.stderr

        with_key = ask(data, "Do cats purr?", env={"RAG_SERVER_API_KEY": KEY})
        assert with_key.exit_code == 0, with_key.output
        assert with_key.stdout.strip() == SERVER_ANSWER
        assert f"using the server at {url}" in with_key.stderr
    assert not (data / FILE_NAME).exists()
