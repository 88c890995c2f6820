"""Prompt-lookup decoding and a draft model (issue 12): a setting for both backends; greedy output unchanged."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from rag_app.llm import create_llm
from rag_app.settings import LLMSettings
from tests.tiny_models import build_tiny_llama

PROMPT = "abc abc abc the quick brown fox; the quick brown fox; the quick"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("lookup") / "tiny")


def _hf(path: Path, **llm: Any) -> Any:
    """The transformers backend on ``path``, greedy (repetition penalty as shipped)."""
    return create_llm(LLMSettings(**{"backend": "transformers", "model_path": path, "dtype": "float32",
                                     "max_new_tokens": 12, "temperature": 0.0, **llm}))


def test_setting_defaults_off() -> None:
    settings = LLMSettings()
    assert settings.prompt_lookup == 0 and settings.draft_model_path is None


def test_transformers_prompt_lookup_gives_the_same_greedy_text(tiny: Path) -> None:
    plain = _hf(tiny)
    lookup = _hf(tiny, prompt_lookup=4)
    assert lookup.generate_kwargs(PROMPT)["prompt_lookup_num_tokens"] == 4
    assert "prompt_lookup_num_tokens" not in plain.generate_kwargs(PROMPT)
    assert lookup.invoke(PROMPT) == plain.invoke(PROMPT)


def test_transformers_draft_model_gives_the_same_greedy_text(tiny: Path) -> None:
    plain = _hf(tiny)
    assisted = _hf(tiny, draft_model_path=tiny, prompt_lookup=4)
    kwargs = assisted.generate_kwargs(PROMPT)
    assert kwargs["assistant_model"] is assisted.assistant_model is not None
    assert "prompt_lookup_num_tokens" not in kwargs  # the draft model wins over lookup
    assert "assistant_model" not in plain.generate_kwargs(PROMPT)
    assert assisted.invoke(PROMPT) == plain.invoke(PROMPT)


def test_transformers_backend_names_the_way_to_a_gguf(tmp_path: Path) -> None:
    from rag_app.errors import ModelNotFoundError

    gguf = tmp_path / "model.Q4_1.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(ModelNotFoundError) as info:
        _hf(gguf)
    assert "folder_from_gguf" in info.value.friendly() and "llamacpp" in info.value.friendly()


def test_missing_draft_model_is_a_named_error(tiny: Path, tmp_path: Path) -> None:
    from rag_app.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError):
        _hf(tiny, draft_model_path=tmp_path / "nowhere")


def test_llamacpp_kwargs_carry_the_lookup_drafter(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    from rag_app.llm import llamacpp

    assert "draft_model" not in llamacpp.llama_kwargs(LLMSettings(), tmp_path / "m.gguf", 256)
    drafter = llamacpp.llama_kwargs(LLMSettings(prompt_lookup=5), tmp_path / "m.gguf", 256)["draft_model"]
    assert type(drafter).__name__ == "LlamaPromptLookupDecoding" and drafter.num_pred_tokens == 5


QUESTION = (
    "Context: The warranty covers the battery for two years and the screen for one year.\n"
    "Question: How long is the battery covered?\nAnswer:"
)


@pytest.mark.e2e
def test_llamacpp_prompt_lookup_same_greedy_answer_with_smollm2() -> None:
    pytest.importorskip("llama_cpp")
    outputs = []
    for n in (0, 6):
        llm = create_llm(LLMSettings(n_ctx=512, max_new_tokens=24, temperature=0.0, prompt_lookup=n))
        outputs.append(llm.invoke(QUESTION))
    assert outputs[0] == outputs[1] and outputs[0].strip()


@pytest.mark.e2e
def test_transformers_prompt_lookup_same_greedy_answer_with_smollm2(tmp_path: Path) -> None:
    """The shipped GGUF, written as a float32 folder, through the transformers backend: the same (right)
    greedy answer with and without lookup."""
    pytest.importorskip("gguf")
    from rag_app.llm.hf import folder_from_gguf
    from rag_app.llm.llamacpp import smollm2_gguf_path

    folder = folder_from_gguf(smollm2_gguf_path(), tmp_path / "smollm2")
    plain = _hf(folder, max_new_tokens=32, repeat_penalty=1.0)  # as the benchmark; 1.1 stops the copying
    lookup = plain.model_copy(update={"prompt_lookup": 10})
    assert lookup.generate_kwargs(QUESTION)["prompt_lookup_num_tokens"] == 10
    answer = plain.invoke(QUESTION)
    assert lookup.invoke(QUESTION) == answer
    assert re.search(r"\b(2|two) years", answer), answer
