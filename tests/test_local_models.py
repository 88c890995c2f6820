"""Backends and embedders loaded from local folders: the transformers backend with a tiny random Llama,
and a tiny Chinese sentence-transformer as ``embedding.model_path`` (real loading code, small models)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rag_app.errors import ModelNotFoundError
from rag_app.llm import create_llm
from rag_app.settings import EmbeddingSettings, LLMSettings, Settings
from tests.tiny_models import build_tiny_llama, build_tiny_sentence_transformer


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="module")
def tiny_embedder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sentence_transformer(tmp_path_factory.mktemp("models") / "tiny-zh-embedder")


def test_transformers_backend_loads_generates_and_streams(tiny_llama: Path) -> None:
    llm: Any = create_llm(
        LLMSettings(backend="transformers", model_path=tiny_llama, max_new_tokens=6, temperature=0.0)
    )
    assert llm.context_window == 512  # from the model config
    assert llm.bos_token == "<s>" and llm.eos_token == "</s>"
    assert "[INST]" in (llm.chat_template or "")
    assert llm.count_tokens("怎样导入文档") == 6  # one token per character
    pieces = list(llm.stream("[INST] 你好 [/INST]"))
    text = "".join(pieces)
    assert pieces and text == llm.invoke("[INST] 你好 [/INST]")  # greedy: repeatable


def test_transformers_backend_model_template_renders_llama2(tiny_llama: Path) -> None:
    from rag_app.prompting import chat_format_for

    llm: Any = create_llm(LLMSettings(backend="transformers", model_path=tiny_llama, max_new_tokens=2))
    fmt = chat_format_for("auto", "SYS", llm)
    assert fmt.name == "model"
    assert fmt.render("q") == "<s>[INST] <<SYS>>\nSYS\n<</SYS>>\n\nq [/INST]"


def test_transformers_backend_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        create_llm(LLMSettings(backend="transformers", model_path=tmp_path / "nope"))
    with pytest.raises(ModelNotFoundError):
        create_llm(LLMSettings(backend="transformers"))


def test_local_chinese_embedder_is_one_setting_away(tiny_embedder: Path) -> None:
    from ingest.embed import build_embeddings

    emb: Any = build_embeddings(EmbeddingSettings(model_path=tiny_embedder))
    assert emb.count_tokens("怎样导入文档") == 6
    vectors = emb.embed_documents(["怎样导入文档？", "知识库"])
    assert len(vectors) == 2 and len(vectors[0]) == 32
    assert emb.embed_query("怎样导入文档？") == pytest.approx(vectors[0], abs=1e-5)


def test_chain_end_to_end_with_local_folders(tiny_llama: Path, tiny_embedder: Path, tmp_path: Path) -> None:
    """transformers backend + custom embedder + real Chroma, wired by settings alone."""
    from rag_app.service import RagService

    doc = tmp_path / "docs" / "手册.md"
    doc.parent.mkdir()
    doc.write_text("# 导入\n\n怎样导入文档？用 rag ingest 命令导入文档。\n", encoding="utf-8")
    settings = Settings.load(
        data_dir=tmp_path / "data",
        embedding={"model_path": str(tiny_embedder)},
        llm={"backend": "transformers", "model_path": str(tiny_llama), "max_new_tokens": 4,
             "prompt_format": "llama2-chat"},
    )
    service = RagService(settings)
    report = service.ingest([doc.parent])
    assert [f.status for f in report.files] == ["added"]
    result = service.chain().invoke("怎样导入文档？")
    assert result["sources"][0]["source"] == "docs/手册.md"
    assert isinstance(result["answer"], str)


def test_missing_embedding_folder(tmp_path: Path) -> None:
    from ingest.embed import build_embeddings

    with pytest.raises(ModelNotFoundError, match="nope"):
        build_embeddings(EmbeddingSettings(model_path=tmp_path / "nope"))


def test_switching_embedders_is_refused_with_a_clear_message(tiny_embedder: Path, tmp_path: Path) -> None:
    """A knowledge base built with one embedder, asked or fed with another (here the tiny Chinese one from
    a folder): one friendly line naming both, and nothing written."""
    from click.testing import CliRunner

    from rag_app.cli import cli

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "guide.txt").write_text("导入文档时运行 rag ingest 命令。", encoding="utf-8")
    base = ["--profile", "fake", "--data-dir", str(tmp_path / "data")]
    assert CliRunner().invoke(cli, [*base, "ingest", "-q", str(docs)]).exit_code == 0
    other = {"RAG_EMBEDDING__BACKEND": "sentence-transformers", "RAG_EMBEDDING__MODEL_PATH": str(tiny_embedder)}
    for command in (["ask", "怎样导入文档？"], ["ingest", "-q", str(docs)]):
        result = CliRunner().invoke(cli, [*base, *command], env=other)
        assert result.exit_code == 1, result.output
        (line,) = [x for x in result.stderr.splitlines() if x.strip()]
        assert "was built with the embedder 'DeterministicFakeEmbedding' (64 dimensions)" in line
        assert "'tiny-zh-embedder' (32 dimensions)" in line and "Traceback" not in result.output
    listed = CliRunner().invoke(cli, [*base, "kb", "list"])
    assert listed.stdout.split("\t")[1] == "1 chunks"  # nothing was added by the refused ingestion
