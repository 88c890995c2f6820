"""Prompt-lookup decoding and a draft model (issue 12): a setting for both backends; greedy output unchanged."""

from __future__ import annotations

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
    return create_llm(LLMSettings(backend="transformers", model_path=path, dtype="float32", max_new_tokens=12,
                                  temperature=0.0, **llm))


def test_setting_defaults_off() -> None:
    settings = LLMSettings()
    assert settings.prompt_lookup == 0 and settings.draft_model_path is None


def test_transformers_prompt_lookup_gives_the_same_greedy_text(tiny: Path) -> None:
    plain = _hf(tiny)
    lookup = _hf(tiny, prompt_lookup=4)
    assert lookup.prompt_lookup == 4 and plain.prompt_lookup == 0
    assert lookup.invoke(PROMPT) == plain.invoke(PROMPT)


def test_transformers_draft_model_gives_the_same_greedy_text(tiny: Path) -> None:
    plain = _hf(tiny)
    assisted = _hf(tiny, draft_model_path=tiny)
    assert assisted.assistant_model is not None
    assert assisted.invoke(PROMPT) == plain.invoke(PROMPT)


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


@pytest.mark.e2e
def test_llamacpp_prompt_lookup_same_greedy_answer_with_smollm2() -> None:
    pytest.importorskip("llama_cpp")
    question = (
        "Context: The warranty covers the battery for two years and the screen for one year.\n"
        "Question: How long is the battery covered?\nAnswer:"
    )
    outputs = []
    for n in (0, 6):
        llm = create_llm(LLMSettings(n_ctx=512, max_new_tokens=24, temperature=0.0, prompt_lookup=n))
        outputs.append(llm.invoke(question))
    assert outputs[0] == outputs[1] and outputs[0].strip()
