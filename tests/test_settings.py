"""Settings: defaults, RAG_ environment variables, TOML files, profiles and their precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag_app.errors import SettingsError
from rag_app.settings import Settings, builtin_profiles


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- defaults ------------------------------------------------------------------------------------


def test_defaults() -> None:
    s = Settings.load()
    assert s.data_dir == Path("./data")
    assert s.chroma_dir == Path("./data") / "chroma"
    assert s.knowledge_base == "default"
    assert s.profile is None
    assert s.embedding.backend == "sentence-transformers"
    assert s.embedding.model_path is None
    assert s.embedding.batch_size == 16
    assert s.llm.backend == "llamacpp"
    assert s.llm.model_path is None
    assert s.llm.prompt_format == "auto"
    assert s.llm.system_prompt == "default"
    assert s.llm.base_model is False
    assert s.llm.n_ctx is None
    assert s.llm.max_auto_ctx == 8192
    assert s.llm.max_new_tokens == 384
    assert s.llm.rope_freq_base is None and s.llm.rope_freq_scale is None
    assert s.ingest.chunk_size == 200
    assert s.ingest.chunk_overlap == 30
    assert s.ingest.pdf_passwords == {}
    assert s.retrieval.k == 4
    assert s.retrieval.score_threshold == 0.0


def test_defaults_are_not_shared_between_instances() -> None:
    a, b = Settings.load(), Settings.load()
    a.llm.fake_responses.append("x")
    a.ingest.pdf_passwords["f.pdf"] = "pw"
    assert b.llm.fake_responses == ["This is a fake answer."]
    assert b.ingest.pdf_passwords == {}


# --- environment ---------------------------------------------------------------------------------


def test_env_top_level_and_nested(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_LLM__N_CTX", "1234")
    monkeypatch.setenv("RAG_DATA_DIR", "/tmp/somewhere/data")
    monkeypatch.setenv("RAG_KNOWLEDGE_BASE", "手册")
    monkeypatch.setenv("RAG_EMBEDDING__BACKEND", "fake")
    monkeypatch.setenv("RAG_RETRIEVAL__K", "7")
    s = Settings.load()
    assert s.llm.n_ctx == 1234
    assert s.data_dir == Path("/tmp/somewhere/data")
    assert s.knowledge_base == "手册"
    assert s.embedding.backend == "fake"
    assert s.retrieval.k == 7
    # Nested env vars only touch their own key: the rest of the section keeps its defaults.
    assert s.llm.max_new_tokens == 384
    assert s.llm.backend == "llamacpp"


def test_env_invalid_value_is_settings_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_LLM__N_CTX", "not-a-number")
    with pytest.raises(SettingsError, match="n_ctx"):
        Settings.load()


def test_env_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_PROFILE", "chinese-alpaca-2-16k")
    s = Settings.load()
    assert s.profile == "chinese-alpaca-2-16k"
    assert s.llm.model == "chinese-alpaca-2-7b-16k"


# --- TOML file -----------------------------------------------------------------------------------

FILE_TEXT = """
data_dir = "from-file"
knowledge_base = "filekb"

[llm]
n_ctx = 777
max_new_tokens = 11

[retrieval]
k = 9
"""


def _assert_from_file(s: Settings) -> None:
    assert s.data_dir == Path("from-file")
    assert s.knowledge_base == "filekb"
    assert s.llm.n_ctx == 777
    assert s.llm.max_new_tokens == 11
    assert s.retrieval.k == 9
    assert s.llm.backend == "llamacpp"  # untouched keys keep their defaults


def test_toml_file_explicit(tmp_path: Path) -> None:
    path = write_toml(tmp_path / "x.toml", FILE_TEXT)
    _assert_from_file(Settings.load(config_file=path))
    _assert_from_file(Settings.load(config_file=str(path)))


def test_toml_file_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_toml(tmp_path / "elsewhere.toml", FILE_TEXT)
    monkeypatch.setenv("RAG_SETTINGS_FILE", str(path))
    _assert_from_file(Settings.load())


def test_toml_file_in_cwd(tmp_path: Path) -> None:
    # the autouse fixture chdirs into tmp_path
    write_toml(tmp_path / "rag_settings.toml", FILE_TEXT)
    _assert_from_file(Settings.load())


def test_no_file_in_cwd_is_fine(tmp_path: Path) -> None:
    assert not (tmp_path / "rag_settings.toml").exists()
    assert Settings.load().llm.n_ctx is None


def test_explicit_file_beats_env_file_and_cwd_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_toml(tmp_path / "rag_settings.toml", "knowledge_base = 'cwd'\n")
    env_file = write_toml(tmp_path / "env.toml", "knowledge_base = 'env'\n")
    explicit = write_toml(tmp_path / "explicit.toml", "knowledge_base = 'explicit'\n")
    monkeypatch.setenv("RAG_SETTINGS_FILE", str(env_file))
    assert Settings.load().knowledge_base == "env"
    assert Settings.load(config_file=explicit).knowledge_base == "explicit"


def test_missing_explicit_file_is_settings_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not found"):
        Settings.load(config_file=tmp_path / "nope.toml")


def test_missing_env_file_is_settings_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_SETTINGS_FILE", str(tmp_path / "nope.toml"))
    with pytest.raises(SettingsError, match="not found"):
        Settings.load()


def test_broken_toml_is_settings_error(tmp_path: Path) -> None:
    path = write_toml(tmp_path / "broken.toml", "[llm\nn_ctx = 1\n")
    with pytest.raises(SettingsError, match="broken.toml"):
        Settings.load(config_file=path)


def test_invalid_value_in_file_is_settings_error(tmp_path: Path) -> None:
    path = write_toml(tmp_path / "bad.toml", "[llm]\ntop_p = 2.0\n")
    with pytest.raises(SettingsError, match="top_p"):
        Settings.load(config_file=path)


def test_unknown_top_level_key_in_file_is_settings_error(tmp_path: Path) -> None:
    path = write_toml(tmp_path / "typo.toml", "data_dirr = 'x'\n")
    with pytest.raises(SettingsError, match="data_dirr"):
        Settings.load(config_file=path)


def test_unknown_nested_key_in_file_is_settings_error(tmp_path: Path) -> None:
    # A typo inside a section ("n_ctxx") must not be silently ignored: the user believes n_ctx is set.
    path = write_toml(tmp_path / "typo.toml", "[llm]\nn_ctxx = 4096\n")
    with pytest.raises(SettingsError, match="n_ctxx"):
        Settings.load(config_file=path)


# --- profiles ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "model", "prompt_format", "trained", "base_model"),
    [
        ("chinese-alpaca-2", "chinese-alpaca-2-7b", "llama2-chat", 4096, False),
        ("chinese-alpaca-2-16k", "chinese-alpaca-2-7b-16k", "llama2-chat", 16384, False),
        ("chinese-alpaca-2-64k", "chinese-alpaca-2-7b-64k", "llama2-chat", 65536, False),
        ("chinese-alpaca-2-13b-16k", "chinese-alpaca-2-13b-16k", "llama2-chat", 16384, False),
        ("chinese-alpaca-2-1.3b-rlhf", "chinese-alpaca-2-1.3b-rlhf", "llama2-chat", 4096, False),
        ("chinese-alpaca", "chinese-alpaca-7b", "alpaca", 2048, False),
        ("chinese-alpaca-pro-33b", "chinese-alpaca-pro-33b", "alpaca", 2048, False),
        ("chinese-llama-2", "chinese-llama-2-7b", "plain", 4096, True),
    ],
)
def test_builtin_profiles(profile: str, model: str, prompt_format: str, trained: int, base_model: bool) -> None:
    from rag_app.catalog import get_model

    s = Settings.load(profile=profile)
    assert s.profile == profile
    assert s.llm.model == model
    assert s.llm.prompt_format == prompt_format
    # The window is planned at load time: the largest that fits, up to the trained context.
    assert s.llm.n_ctx == "auto"
    entry = get_model(model)
    assert entry is not None and entry.trained_context == trained
    assert s.llm.base_model is base_model
    # RoPE values come from the GGUF for the long-context models: a profile never sets them.
    assert s.llm.rope_freq_base is None
    assert s.llm.rope_freq_scale is None
    assert s.llm.backend == "llamacpp"


def test_builtin_profile_names() -> None:
    names = set(builtin_profiles())
    assert {"chinese-alpaca-2", "chinese-alpaca-2-16k", "chinese-alpaca-2-64k", "chinese-alpaca",
            "chinese-llama-2", "fake"} <= names
    sizes = {"1.3b", "7b", "13b"}
    assert {f"chinese-alpaca-2-{s}" for s in sizes} <= names
    assert {"chinese-alpaca-2-7b-16k", "chinese-alpaca-2-13b-16k", "chinese-alpaca-2-7b-64k"} <= names
    assert {"chinese-alpaca-2-1.3b-rlhf", "chinese-alpaca-2-7b-rlhf"} <= names
    assert {f"chinese-alpaca{v}-{s}" for v in ("", "-plus", "-pro") for s in ("7b", "13b", "33b")} <= names


def test_fake_profile() -> None:
    s = Settings.load(profile="fake")
    assert s.llm.backend == "fake"
    assert s.embedding.backend == "fake"


def test_user_profile_in_toml(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path / "p.toml",
        """
[profiles.mine]
llm = { n_ctx = 555, prompt_format = "alpaca" }
retrieval = { k = 2 }

[profiles.chinese-alpaca-2]
llm = { n_ctx = 1000 }
""",
    )
    s = Settings.load(config_file=path, profile="mine")
    assert s.profile == "mine"
    assert s.llm.n_ctx == 555
    assert s.llm.prompt_format == "alpaca"
    assert s.retrieval.k == 2
    # a user profile of a built-in name replaces the built-in one
    s2 = Settings.load(config_file=path, profile="chinese-alpaca-2")
    assert s2.llm.n_ctx == 1000
    assert s2.llm.prompt_format == "auto"


def test_profile_selected_in_file(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path / "p.toml",
        'profile = "mine"\n[profiles.mine]\nllm = { n_ctx = 555 }\n',
    )
    s = Settings.load(config_file=path)
    assert s.profile == "mine"
    assert s.llm.n_ctx == 555


def test_unknown_profile_names_known_ones(tmp_path: Path) -> None:
    path = write_toml(tmp_path / "p.toml", "[profiles.mine]\nllm = { n_ctx = 555 }\n")
    with pytest.raises(SettingsError) as info:
        Settings.load(config_file=path, profile="nope")
    message = str(info.value)
    assert "nope" in message
    for name in ("chinese-alpaca-2", "chinese-alpaca-2-16k", "chinese-llama-2", "fake", "mine"):
        assert name in message


def test_unknown_profile_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_PROFILE", "nope")
    with pytest.raises(SettingsError, match="chinese-alpaca-2"):
        Settings.load()


# --- precedence: kwargs > env > profile > file > defaults ----------------------------------------


def test_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_toml(
        tmp_path / "p.toml",
        """
knowledge_base = "file"
[llm]
n_ctx = 100
max_new_tokens = 100
top_k = 100
seed = 100
[profiles.mine]
llm = { n_ctx = 200, max_new_tokens = 200, top_k = 200 }
""",
    )
    monkeypatch.setenv("RAG_LLM__N_CTX", "300")
    monkeypatch.setenv("RAG_LLM__MAX_NEW_TOKENS", "300")
    s = Settings.load(config_file=path, profile="mine", llm={"n_ctx": 400})
    assert s.llm.n_ctx == 400  # kwargs beat env
    assert s.llm.max_new_tokens == 300  # env beats profile
    assert s.llm.top_k == 200  # profile beats file
    assert s.llm.seed == 100  # file beats defaults
    assert s.llm.temperature == 0.2  # default
    assert s.knowledge_base == "file"


def test_nested_kwargs_merge_with_profile() -> None:
    # A nested keyword override sets only its own key; the profile's other llm keys survive.
    s = Settings.load(profile="chinese-alpaca-2", llm={"max_new_tokens": 12})
    assert s.llm.max_new_tokens == 12
    assert s.llm.n_ctx == "auto"
    assert s.llm.prompt_format == "llama2-chat"


def test_env_beats_builtin_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_LLM__N_CTX", "1234")
    s = Settings.load(profile="chinese-alpaca-2-64k")
    assert s.llm.n_ctx == 1234
    assert s.llm.prompt_format == "llama2-chat"


def test_kwargs_top_level() -> None:
    s = Settings.load(data_dir="elsewhere", knowledge_base="kb2")
    assert s.data_dir == Path("elsewhere")
    assert s.knowledge_base == "kb2"


# --- invalid values ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"llm": {"top_p": 2.0}},
        {"llm": {"prompt_format": "chatml-ish"}},
        {"retrieval": {"k": 0}},
        {"retrieval": {"score_threshold": 1.5}},
        {"ingest": {"chunk_size": 1}},
        {"embedding": {"backend": "openai"}},
        {"no_such_setting": 1},
    ],
)
def test_invalid_values_are_settings_errors(overrides: dict) -> None:
    with pytest.raises(SettingsError, match="invalid settings"):
        Settings.load(**overrides)


def test_settings_error_is_friendly() -> None:
    with pytest.raises(SettingsError) as info:
        Settings.load(profile="nope")
    assert "RAG_" in info.value.friendly()  # the hint says where to look
