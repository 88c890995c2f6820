"""LLM backend registry: names, errors, lazy imports, llama.cpp arguments. No model is loaded here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rag_app.errors import MissingDependencyError, ModelNotFoundError, RagError, UnknownBackendError
from rag_app.llm import TokenAwareLLM, backend_names, create_llm, register_backend
from rag_app.llm.fake import FakeLLM
from rag_app.llm.llamacpp import llama_kwargs
from rag_app.settings import LLMSettings

HEAVY = ["llama_cpp", "transformers", "torch", "sentence_transformers", "chromadb", "langchain_chroma"]


def test_backend_names() -> None:
    names = backend_names()
    assert {"llamacpp", "transformers", "fake"} <= set(names)
    assert names == sorted(names)


def test_unknown_backend_names_the_known_ones() -> None:
    with pytest.raises(UnknownBackendError) as info:
        create_llm(LLMSettings(backend="gpt-9"))
    assert "gpt-9" in str(info.value)
    for name in ("llamacpp", "transformers", "fake"):
        assert name in info.value.hint
    assert isinstance(info.value, RagError)
    assert "fake" in info.value.friendly()


def test_fake_backend() -> None:
    llm = create_llm(LLMSettings(backend="fake", fake_responses=["one", "two"], n_ctx=1000, max_new_tokens=50))
    assert isinstance(llm, FakeLLM)
    assert isinstance(llm, TokenAwareLLM)
    assert llm.context_window == 1000
    assert llm.max_new_tokens == 50
    assert llm.chat_template is None
    assert llm.count_tokens("hello world, this is text") > 0
    assert llm.count_tokens("中文") >= 2  # at least one token per CJK character
    assert llm.invoke("q") == "one"
    assert "".join(llm.stream("q")) == "two"


def test_fake_backend_default_window() -> None:
    llm = create_llm(LLMSettings(backend="fake"))
    assert llm.context_window == 4096
    assert llm.invoke("x") == "This is a fake answer."


def test_register_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    import rag_app.llm as registry

    monkeypatch.setattr(registry, "_BACKENDS", dict(registry._BACKENDS))
    register_backend("mine", "rag_app.llm.fake")
    assert "mine" in backend_names()
    assert isinstance(create_llm(LLMSettings(backend="mine")), FakeLLM)


def test_import_is_cheap() -> None:
    code = (
        "import json, sys\n"
        "import rag_app, rag_app.llm, rag_app.settings, rag_app.errors, rag_app.prompting\n"
        "from rag_app.settings import Settings\n"
        "Settings.load()\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60, env={"PATH": ""}
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_missing_llama_cpp_gives_pip_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp → ImportError
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    with pytest.raises(MissingDependencyError) as info:
        create_llm(LLMSettings(backend="llamacpp", model_path=model))
    assert "pip install" in str(info.value)
    assert "llamacpp" in str(info.value)


def test_missing_transformers_gives_pip_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingDependencyError) as info:
        create_llm(LLMSettings(backend="transformers", model_path=tmp_path))
    assert "pip install" in str(info.value)


def test_llamacpp_missing_model_file(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    missing = tmp_path / "nope" / "model.gguf"
    with pytest.raises(ModelNotFoundError) as info:
        create_llm(LLMSettings(backend="llamacpp", model_path=missing))
    assert str(missing) in str(info.value)
    assert "model_path" in info.value.hint


def test_llamacpp_not_a_gguf_file(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    bogus = tmp_path / "model.gguf"
    bogus.write_text("this is not a model", encoding="utf-8")
    with pytest.raises(ModelNotFoundError, match="GGUF"):
        create_llm(LLMSettings(backend="llamacpp", model_path=bogus))


def test_llamacpp_directory_as_model_path(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    with pytest.raises(ModelNotFoundError):
        create_llm(LLMSettings(backend="llamacpp", model_path=tmp_path))


def test_llama_kwargs_without_rope_by_default(tmp_path: Path) -> None:
    kwargs = llama_kwargs(LLMSettings(), tmp_path / "m.gguf", 4096)
    assert not [k for k in kwargs if k.startswith("rope")]
    assert kwargs["model_path"] == str(tmp_path / "m.gguf")
    assert kwargs["n_ctx"] == 4096
    assert kwargs["n_gpu_layers"] == 0
    assert kwargs["seed"] == 42
    assert kwargs["verbose"] is False
    from rag_app.llm.threads import plan_threads

    planned = plan_threads()  # no fixed count: the cores free now (re-planned before each request)
    assert (kwargs["n_threads"], kwargs["n_threads_batch"]) == (planned.generate, planned.prompt)


def test_llama_kwargs_with_rope_and_threads(tmp_path: Path) -> None:
    settings = LLMSettings(rope_freq_base=26000.0, rope_freq_scale=0.25, n_threads=3, n_gpu_layers=-1)
    kwargs = llama_kwargs(settings, tmp_path / "m.gguf", 16384)
    assert kwargs["rope_freq_base"] == 26000.0
    assert kwargs["rope_freq_scale"] == 0.25
    assert kwargs["n_threads"] == kwargs["n_threads_batch"] == 3
    assert kwargs["n_gpu_layers"] == -1
    assert kwargs["n_ctx"] == 16384


def test_llama_kwargs_only_one_rope_value(tmp_path: Path) -> None:
    kwargs = llama_kwargs(LLMSettings(rope_freq_scale=0.5), tmp_path / "m.gguf", 2048)
    assert kwargs["rope_freq_scale"] == 0.5
    assert "rope_freq_base" not in kwargs


def test_long_context_profiles_pass_no_rope(tmp_path: Path) -> None:
    from rag_app.settings import Settings

    for profile in ("chinese-alpaca-2-16k", "chinese-alpaca-2-64k"):
        llm_settings = Settings.load(profile=profile).llm
        kwargs = llama_kwargs(llm_settings, tmp_path / "m.gguf", llm_settings.n_ctx or 0)
        assert not [k for k in kwargs if k.startswith("rope")]


def test_fake_backend_can_write_slowly() -> None:
    """llm.fake_delay: a fake answer that takes time to stream (demos and the app's Stop test)."""
    from rag_app.llm import create_llm
    from rag_app.settings import LLMSettings

    assert create_llm(LLMSettings(backend="fake")).sleep is None  # type: ignore[attr-defined]
    slow = create_llm(LLMSettings(backend="fake", fake_responses=["abc"], fake_delay=0.01))
    assert slow.sleep == 0.01 and "".join(slow.stream("q")) == "abc"  # type: ignore[attr-defined]
