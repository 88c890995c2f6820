"""The embedder exported to ONNX (issue 12), run by onnxruntime or OpenVINO: same vectors as torch, checked
at export, torch when not."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

import ingest.onnx_embed as onnx_embed  # noqa: E402
from ingest.embed import SentenceTransformerEmbeddings, build_embeddings  # noqa: E402
from ingest.onnx_embed import OnnxEmbeddings, OpenVinoEmbeddings  # noqa: E402
from rag_app.settings import EmbeddingSettings  # noqa: E402
from tests.tiny_models import build_tiny_sentence_transformer  # noqa: E402

TEXTS = ["知识库问答", "混合检索和向量检索", "向量", "这是一个比较长的句子，用来检查填充和截断是否正确。" * 3]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sentence_transformer(tmp_path_factory.mktemp("onnx") / "tiny-st")


def test_export_agrees_with_torch_and_keeps_identity(tiny: Path, tmp_path: Path) -> None:
    settings = EmbeddingSettings(backend="onnx", model_path=tiny)
    onnx = build_embeddings(settings, tmp_path / "models")
    torch = build_embeddings(EmbeddingSettings(model_path=tiny))
    assert isinstance(onnx, OnnxEmbeddings) and isinstance(torch, SentenceTransformerEmbeddings)
    assert onnx.identity == torch.identity and onnx.max_tokens == torch.max_tokens
    assert [onnx.count_tokens(t) for t in TEXTS] == [torch.count_tokens(t) for t in TEXTS]
    got, want = np.asarray(onnx.embed_documents(TEXTS)), np.asarray(torch.embed_documents(TEXTS))
    assert np.min(np.sum(got * want, axis=1)) > 0.9999
    assert np.allclose(onnx.embed_query(TEXTS[0]), want[0], atol=1e-4)
    (record,) = (tmp_path / "models").glob("*/agreement.json")
    assert json.loads(record.read_text())["ok"] is True


def test_int8_export_is_checked_too(tiny: Path, tmp_path: Path) -> None:
    emb = build_embeddings(EmbeddingSettings(backend="onnx", model_path=tiny, quantize="int8"), tmp_path)
    (record,) = tmp_path.glob("*/agreement.json")
    verdict = json.loads(record.read_text())
    assert verdict["quantize"] == "int8" and verdict["ok"] == isinstance(emb, OnnxEmbeddings)
    assert (record.parent / "model_int8.onnx").is_file()


def test_disagreeing_export_falls_back_to_torch_with_a_warning(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(onnx_embed, "measure_agreement", lambda *a: (0.95, 0.5))
    settings = EmbeddingSettings(backend="onnx", model_path=tiny)
    with caplog.at_level(logging.WARNING):
        emb = build_embeddings(settings, tmp_path)
    assert isinstance(emb, SentenceTransformerEmbeddings)
    assert "falling back to torch" in caplog.text and "disagrees" in caplog.text
    # The verdict is remembered: no second export or check.
    monkeypatch.setattr(onnx_embed, "export_transformer", lambda *a: pytest.fail("exported again"))
    assert isinstance(build_embeddings(settings, tmp_path), SentenceTransformerEmbeddings)


def _needs_openvino() -> None:
    pytest.importorskip("openvino", reason="the openvino extra is not installed")


@pytest.mark.parametrize("precision", ["auto", "f32"])
def test_openvino_agrees_keeps_order_and_identity(tiny: Path, tmp_path: Path, precision: str) -> None:
    _needs_openvino()
    emb = build_embeddings(EmbeddingSettings(backend="openvino", model_path=tiny, precision=precision,
                                             batch_size=4), tmp_path)
    torch = build_embeddings(EmbeddingSettings(model_path=tiny))
    assert isinstance(emb, OpenVinoEmbeddings) and emb.identity == torch.identity
    if precision == "f32":
        assert emb.precision == "f32"
    # More texts than one batch per stream, in an order unlike their lengths: vectors come back in input order.
    texts = [TEXTS[i % len(TEXTS)] + "。" * (i % 5) for i in range(11)]
    got, want = np.asarray(emb.embed_documents(texts)), np.asarray(torch.embed_documents(texts))
    assert np.min(np.sum(got * want, axis=1)) > 0.99
    assert np.sum(np.asarray(emb.embed_query(texts[3])) * want[3]) > 0.99
    assert emb.embed_documents([]) == []
    (record,) = tmp_path.glob(f"*/agreement-openvino-{emb.precision}.json")
    verdict = json.loads(record.read_text())
    assert verdict["ok"] is True and verdict["runtime"] == "OpenVinoEmbeddings"


def test_openvino_shares_the_export_and_keeps_its_own_verdict(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _needs_openvino()
    assert isinstance(build_embeddings(EmbeddingSettings(backend="onnx", model_path=tiny), tmp_path), OnnxEmbeddings)
    monkeypatch.setattr(onnx_embed, "export_transformer", lambda *a: pytest.fail("exported again"))
    monkeypatch.setattr(onnx_embed, "measure_agreement", lambda *a: (0.97, 0.9))
    with caplog.at_level(logging.WARNING):
        emb = build_embeddings(EmbeddingSettings(backend="openvino", model_path=tiny), tmp_path)
    # onnxruntime's verdict does not speak for OpenVINO: checked (here: made to disagree) and refused.
    assert isinstance(emb, SentenceTransformerEmbeddings)
    assert "openvino embedder not used" in caplog.text and "disagrees" in caplog.text
    assert json.loads(next(tmp_path.glob("*/agreement.json")).read_text())["ok"] is True


def test_openvino_refuses_int8_and_a_missing_extra_names_the_fix(monkeypatch: pytest.MonkeyPatch, tiny: Path,
                                                                  tmp_path: Path) -> None:
    from pydantic import ValidationError

    from rag_app.errors import MissingDependencyError

    with pytest.raises(ValidationError, match="quantize = 'int8' is for backend 'onnx'"):
        EmbeddingSettings(backend="openvino", quantize="int8")
    monkeypatch.setitem(__import__("sys").modules, "openvino", None)
    with pytest.raises(MissingDependencyError) as caught:
        onnx_embed.build_onnx_embeddings(EmbeddingSettings(backend="openvino", model_path=tiny), tmp_path)
    assert "rag-app[openvino]" in caught.value.friendly()


@pytest.mark.e2e
def test_minilm_export_agrees(tmp_path: Path, real_embeddings: SentenceTransformerEmbeddings) -> None:
    runs = [("onnx", "none"), ("onnx", "int8")]
    if __import__("importlib").util.find_spec("openvino") is not None:
        runs.append(("openvino", "none"))
    for backend, quantize in runs:
        emb = build_embeddings(EmbeddingSettings(backend=backend, quantize=quantize), tmp_path)
        assert isinstance(emb, OnnxEmbeddings if backend == "onnx" else OpenVinoEmbeddings), (backend, quantize)
        assert emb.identity == real_embeddings.identity
        texts = ["How do I configure OCR?", "知识库问答系统先把文档切成小块并计算向量。"]
        cos = np.sum(np.asarray(emb.embed_documents(texts)) * np.asarray(real_embeddings.embed_documents(texts)), axis=1)
        assert np.mean(cos) >= 0.99
