"""The llama.cpp backend with the real SmolLM2 GGUF: loading, streaming, token counting, and the RoPE trap.

LangChain's ``LlamaCpp`` passes ``rope_freq_base=10000`` / ``rope_freq_scale=1.0`` and so overwrites the
RoPE values stored in a GGUF. SmolLM2 stores ``rope.freq_base = 100000``: if our loader overwrote it, the
model's logits would change. These tests compare logits to prove the file's values are kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.e2e
llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")

from rag_app.llm import create_llm  # noqa: E402
from rag_app.llm import llamacpp as backend  # noqa: E402
from rag_app.llm.gguf import read_metadata  # noqa: E402
from rag_app.settings import LLMSettings  # noqa: E402

PROMPT = b"The capital of France is a city called"


def _last_logits(kwargs: dict[str, Any]) -> np.ndarray:
    llm = llama_cpp.Llama(**kwargs, logits_all=True)
    try:
        llm.eval(llm.tokenize(PROMPT, add_bos=True))
        return np.array(llm.scores[llm.n_tokens - 1]).copy()
    finally:
        llm.close()


@pytest.fixture(scope="module")
def gguf() -> Path:
    return backend.smollm2_gguf_path()


def test_default_model_ships_in_package(gguf: Path) -> None:
    assert gguf.is_file() and gguf.suffix == ".gguf"
    meta = read_metadata(gguf)
    assert meta["general.architecture"] == "llama"
    assert meta["llama.rope.freq_base"] == pytest.approx(100000.0)
    assert meta["llama.context_length"] == 8192


def test_rope_values_from_the_model_file_are_kept(gguf: Path) -> None:
    file_base = float(read_metadata(gguf)["llama.rope.freq_base"])
    ours = _last_logits(backend.llama_kwargs(LLMSettings(), gguf, n_ctx=256))
    explicit_file_values = _last_logits({**backend.llama_kwargs(LLMSettings(), gguf, 256), "rope_freq_base": file_base})
    langchain_defaults = _last_logits(
        {**backend.llama_kwargs(LLMSettings(), gguf, 256), "rope_freq_base": 10000.0, "rope_freq_scale": 1.0}
    )
    # Our loader gives exactly the logits of the GGUF's own RoPE base …
    np.testing.assert_array_equal(ours, explicit_file_values)
    # … and the values LangChain's LlamaCpp would force give different ones.
    assert np.abs(ours - langchain_defaults).max() > 1e-2


def test_rope_override_setting_is_applied(gguf: Path) -> None:
    overridden = _last_logits(backend.llama_kwargs(LLMSettings(rope_freq_base=10000.0), gguf, 256))
    default = _last_logits(backend.llama_kwargs(LLMSettings(), gguf, 256))
    assert np.abs(overridden - default).max() > 1e-2


def test_create_uses_the_file_context_and_template(real_llm: Any) -> None:
    assert real_llm.context_window == 2048
    assert real_llm.chat_template and "<|im_start|>" in real_llm.chat_template
    assert real_llm.eos_token == "<|im_end|>"


def test_factory_passes_no_rope_arguments(monkeypatch: pytest.MonkeyPatch, gguf: Path) -> None:
    seen: dict[str, Any] = {}
    real = llama_cpp.Llama

    def spy(**kwargs: Any) -> Any:
        seen.update(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(llama_cpp, "Llama", spy)
    create_llm(LLMSettings(packaged_model="smollm2-135m", n_ctx=256))
    assert seen["model_path"] == str(gguf)
    assert not {"rope_freq_base", "rope_freq_scale"} & set(seen)


def test_auto_context_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    real = llama_cpp.Llama

    def spy(**kwargs: Any) -> Any:
        seen.update(kwargs)
        return real(**{**kwargs, "n_ctx": 256})

    monkeypatch.setattr(llama_cpp, "Llama", spy)
    llm = create_llm(LLMSettings(packaged_model="smollm2-135m", max_auto_ctx=1024))
    assert seen["n_ctx"] == 1024 and llm.context_window == 1024


def test_generation_streams_and_counts_tokens(real_llm: Any) -> None:
    prompt = "<|im_start|>user\nSay hello.<|im_end|>\n<|im_start|>assistant\n"
    pieces = list(real_llm.stream(prompt))
    assert len(pieces) > 1
    text = "".join(pieces)
    assert text.strip()
    assert real_llm.invoke(prompt) == text  # greedy: the same answer twice
    assert real_llm.count_tokens("hello world") == 2
    assert real_llm.count_tokens("<|im_start|>") == 1  # special tokens are one token


def test_the_prompt_keeps_its_first_token_when_llama_cpp_adds_no_bos(real_llm: Any) -> None:
    """SmolLM2's BOS is ChatML's <|im_start|> and its GGUF says add_bos_token = false: the template's leading
    <|im_start|> is the prompt's first token and must reach the model (it used to be cut off as a double BOS)."""
    prompt = "<|im_start|>user\nSay hello.<|im_end|>\n<|im_start|>assistant\n"
    assert real_llm.bos_token == "<|im_start|>" and real_llm.adds_bos is False
    assert real_llm._prepare(prompt) == prompt
    doubled = real_llm.model_copy(update={"adds_bos": True})  # a model whose llama.cpp adds BOS: cut once
    assert doubled._prepare(prompt) == prompt[len("<|im_start|>") :]


def test_bad_model_file_is_a_named_error(tmp_path: Path) -> None:
    from rag_app.errors import ModelNotFoundError

    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf at all")
    with pytest.raises(ModelNotFoundError, match="broken.gguf"):
        create_llm(LLMSettings(model_path=bad))
