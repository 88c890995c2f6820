"""The ``rag`` command line through click's CliRunner, with the ``fake`` profile (no models)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from rag_app.cli import cli

FAKE_ANSWER = "This is a fake answer."


def run(data: Path, *args: str, env: dict[str, str] | None = None, input: str | None = None) -> Result:
    """``rag --profile fake --data-dir DATA ARGS…``"""
    return CliRunner().invoke(cli, ["--profile", "fake", "--data-dir", str(data), *args], env=env, input=input)


def error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def assert_one_line_error(result: Result, *fragments: str) -> str:
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = error_lines(result)
    assert len(lines) == 1, lines
    assert lines[0].startswith("Error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "cats.txt").write_text("Cats are small furry animals. They purr when happy.", encoding="utf-8")
    (folder / "guide.md").write_text("# 使用指南\n\n导入文档时运行 rag ingest 命令。", encoding="utf-8")
    return folder


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def ingested(docs: Path, data: Path) -> Path:
    result = run(data, "ingest", "-q", str(docs))
    assert result.exit_code == 0, result.output
    return data


# --- ingest ----------------------------------------------------------------------------------------


def test_ingest_folder(docs: Path, data: Path) -> None:
    result = run(data, "ingest", str(docs))
    assert result.exit_code == 0, result.output
    assert "Knowledge base 'default': 2 file(s) ok, 0 skipped, 0 failed" in result.stdout
    assert "Traceback" not in result.output
    assert (data / "chroma").is_dir()


def test_ingest_again_reports_unchanged(ingested: Path, docs: Path) -> None:
    result = run(ingested, "ingest", "-q", str(docs))
    assert result.exit_code == 0, result.output
    assert "chunks: 0 added" in result.stdout
    assert "2 file(s) ok" in result.stdout


def test_ingest_with_failing_file(docs: Path, data: Path) -> None:
    (docs / "empty.txt").write_bytes(b"")
    result = run(data, "ingest", "-q", str(docs))
    assert result.exit_code == 1
    assert "failed: docs/empty.txt: the file is empty" in result.stdout
    assert "2 file(s) ok, 0 skipped, 1 failed" in result.stdout
    assert "Traceback" not in result.output


def test_ingest_unknown_extension_is_skipped(docs: Path, data: Path) -> None:
    (docs / "data.xyz").write_text("x", encoding="utf-8")
    result = run(data, "ingest", "-q", str(docs))
    assert result.exit_code == 0, result.output
    assert "skipped: docs/data.xyz: unsupported file type '.xyz'" in result.stdout
    assert "1 skipped" in result.stdout


def test_ingest_duplicate(docs: Path, data: Path) -> None:
    (docs / "copy.txt").write_bytes((docs / "cats.txt").read_bytes())
    result = run(data, "ingest", "-q", str(docs))
    assert result.exit_code == 0, result.output
    assert "duplicate: docs/copy.txt" in result.stdout


def test_ingest_into_chinese_knowledge_base_and_list(docs: Path, data: Path) -> None:
    assert run(data, "ingest", "-q", "--kb", "产品手册", str(docs)).exit_code == 0
    result = run(data, "kb", "list")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith("产品手册\t")
    assert "chunks" in result.stdout


def test_ingest_without_path_is_usage_error(data: Path) -> None:
    result = run(data, "ingest")
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_ingest_missing_path_is_usage_error(data: Path, tmp_path: Path) -> None:
    result = run(data, "ingest", str(tmp_path / "nope"))
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_ingest_bad_password_option_is_usage_error(docs: Path, data: Path) -> None:
    result = run(data, "ingest", "--password", "no-equals-sign", str(docs))
    assert result.exit_code == 2
    assert "FILE=PASSWORD" in result.output


def test_ingest_blank_kb_name_is_a_friendly_error(docs: Path, data: Path) -> None:
    result = run(data, "ingest", "-q", "--kb", "   ", str(docs))
    # A name that breaks the knowledge-base name rule (rag_app.names) is a usage error: exit 2, one line.
    assert result.exit_code == 2, result.output
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "empty" in lines[0], lines


# --- ask -------------------------------------------------------------------------------------------


def test_ask_prints_answer_and_sources(ingested: Path) -> None:
    result = run(ingested, "ask", "Do cats purr?")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith(FAKE_ANSWER)
    assert "\nSources:\n" in out
    assert "  [1] docs/" in out
    assert "  [2] docs/" in out
    assert "docs/cats.txt — Cats are small furry animals." in out
    assert out.index(FAKE_ANSWER) < out.index("Sources:")


def test_ask_hide_source(ingested: Path) -> None:
    result = run(ingested, "ask", "--hide-source", "Do cats purr?")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == FAKE_ANSWER
    assert "Sources" not in result.output


def test_ask_on_empty_data(data: Path) -> None:
    assert_one_line_error(run(data, "ask", "Do cats purr?"), "no documents")


def test_ask_unknown_kb_names_existing_ones(ingested: Path) -> None:
    run(ingested, "ingest", "-q", "--kb", "产品手册", str(ingested.parent / "docs"))
    line = assert_one_line_error(run(ingested, "ask", "--kb", "nope", "Do cats purr?"), "'nope'")
    assert "default" in line and "产品手册" in line


def test_ask_with_missing_model_file(ingested: Path) -> None:
    env = {"RAG_LLM__BACKEND": "llamacpp", "RAG_LLM__MODEL_PATH": "/nonexistent.gguf"}
    result = run(ingested, "ask", "Do cats purr?", env=env)
    assert_one_line_error(result, "/nonexistent.gguf")


def test_ask_empty_question_is_usage_error(ingested: Path) -> None:
    result = run(ingested, "ask", "   ")
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_interactive_ask_answers_each_question(ingested: Path) -> None:
    # q1 → "first answer"; q2 has history: condense ("standalone") then "second answer"
    env = {"RAG_LLM__FAKE_RESPONSES": json.dumps(["first answer", "standalone", "second answer"])}
    result = run(ingested, "ask", "--hide-source", env=env, input="q1\nq2\n\n")
    assert result.exit_code == 0, result.output
    answers = [line for line in result.stdout.splitlines() if line.strip()]
    assert answers == ["first answer", "second answer"]


def test_interactive_ask_stops_at_end_of_input(ingested: Path) -> None:
    result = run(ingested, "ask", "--hide-source", input="q1\n")
    assert result.exit_code == 0, result.output
    assert result.stdout.count(FAKE_ANSWER) == 1


def test_interactive_ask_quit(ingested: Path) -> None:
    result = run(ingested, "ask", input="quit\nq2\n")
    assert result.exit_code == 0, result.output
    assert FAKE_ANSWER not in result.stdout


# --- kb list, settings -----------------------------------------------------------------------------


def test_kb_list(ingested: Path) -> None:
    result = run(ingested, "kb", "list")
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    name, count, embedder = line.split("\t")
    assert name == "default"
    assert count.endswith(" chunks") and int(count.split()[0]) >= 2
    assert embedder == "DeterministicFakeEmbedding (64 dimensions)"  # the fake profile's embedder


def test_kb_list_empty(data: Path) -> None:
    result = run(data, "kb", "list")
    assert result.exit_code == 0, result.output
    assert "No knowledge bases yet" in result.stdout


def test_profile_from_env(ingested: Path) -> None:
    result = CliRunner().invoke(
        cli, ["--data-dir", str(ingested), "ask", "--hide-source", "Do cats purr?"], env={"RAG_PROFILE": "fake"}
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == FAKE_ANSWER


def test_data_dir_from_env(docs: Path, tmp_path: Path) -> None:
    env = {"RAG_PROFILE": "fake", "RAG_DATA_DIR": str(tmp_path / "envdata")}
    result = CliRunner().invoke(cli, ["ingest", "-q", str(docs)], env=env)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "envdata" / "chroma").is_dir()


def test_unknown_profile(data: Path) -> None:
    result = CliRunner().invoke(cli, ["--profile", "nope", "--data-dir", str(data), "kb", "list"])
    assert_one_line_error(result, "unknown profile 'nope'", "chinese-alpaca-2")


def test_missing_config_file(data: Path, tmp_path: Path) -> None:
    result = run(data, "--config", str(tmp_path / "nope.toml"), "kb", "list")
    assert_one_line_error(result, "nope.toml", "not found")


def test_config_file(docs: Path, tmp_path: Path) -> None:
    conf = tmp_path / "conf.toml"
    conf.write_text(f'profile = "fake"\ndata_dir = "{(tmp_path / "confdata").as_posix()}"\n', encoding="utf-8")
    result = CliRunner().invoke(cli, ["--config", str(conf), "ingest", "-q", str(docs)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "confdata" / "chroma").is_dir()


def test_help() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for command in ("ingest", "ask", "kb"):
        assert command in result.output
