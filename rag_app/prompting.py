"""Prompt templates and model formats.

Two layers: the *instruction* (what we ask: answer from these sources, condense this question …), written
in the question's language, and the *format* that wraps it for a given model (Llama-2-chat for
Chinese-Alpaca-2, Stanford Alpaca for first-generation Chinese-Alpaca, or the chat template stored in the
model file). Template texts are files under ``prompts/`` loaded by name.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from langchain_core.documents import Document

from rag_app.errors import SettingsError

logger = logging.getLogger(__name__)

Turn = tuple[str, str]  # (user, assistant)

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


@cache
def load_prompt(name: str) -> str:
    """Template text of ``prompts/<name>.txt``: exact file content (one final newline is not part of it)."""
    try:
        text = resources.files("rag_app.prompts").joinpath(f"{name}.txt").read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise SettingsError(f"no prompt template named '{name}'") from exc
    return text[:-1] if text.endswith("\n") else text


def question_language(text: str) -> str:
    """'zh' when the text contains Chinese characters, else 'en'."""
    return "zh" if _CJK.search(text) else "en"


def system_prompt_text(choice: str) -> str:
    """``default`` / ``long`` select the Alpaca-2 system prompts; anything else is the prompt itself."""
    if choice in ("default", "long"):
        return load_prompt(f"system_{choice}")
    return choice


@dataclass(frozen=True)
class ChatFormat:
    """Wraps an instruction (plus earlier turns) in the text a given model was trained on."""

    name: str
    system_prompt: str
    chat_template: str | None = None
    bos_token: str = ""
    eos_token: str = ""

    def render(self, instruction: str, history: Sequence[Turn] = ()) -> str:
        if self.name == "llama2-chat":
            return self._llama2_chat(instruction, history)
        if self.name == "alpaca":
            return self._alpaca(instruction, history)
        if self.name == "model":
            return self._model_template(instruction, history)
        return self._plain(instruction, history)

    def _llama2_chat(self, instruction: str, history: Sequence[Turn]) -> str:
        first, nxt, answer = (load_prompt(f"format_llama2_chat{s}") for s in ("", "_next", "_answer"))
        turns = [*history, (instruction, None)]
        out = []
        for i, (user, assistant) in enumerate(turns):
            if i == 0:
                out.append(first.format(system_prompt=self.system_prompt, instruction=user))
            else:
                out.append(nxt.format(instruction=user))
            if assistant is not None:
                out.append(answer.format(answer=assistant))
        return "".join(out)

    def _alpaca(self, instruction: str, history: Sequence[Turn]) -> str:
        template = load_prompt("format_alpaca")
        out = [template.format(instruction=u) + a + "\n\n" for u, a in history]
        return "".join(out) + template.format(instruction=instruction)

    def _model_template(self, instruction: str, history: Sequence[Turn]) -> str:
        if not self.chat_template:
            return self._plain(instruction, history)
        messages: list[dict[str, str]] = [{"role": "system", "content": self.system_prompt}]
        for user, assistant in history:
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        messages.append({"role": "user", "content": instruction})
        return render_chat_template(self.chat_template, messages, self.bos_token, self.eos_token)

    def _plain(self, instruction: str, history: Sequence[Turn]) -> str:
        past = "".join(f"Q: {u}\nA: {a}\n\n" for u, a in history)
        return f"{past}{instruction}\n"

    @property
    def stop(self) -> list[str]:
        """Strings that end an answer (beyond the model's EOS)."""
        if self.name == "alpaca":
            return ["### Instruction:"]
        if self.name == "plain":
            return ["\nQ:"]
        return []


def render_chat_template(template: str, messages: list[dict[str, str]], bos: str, eos: str) -> str:
    """Render a Hugging Face / GGUF Jinja chat template, sandboxed, with a generation prompt."""
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template).render(
            messages=messages, bos_token=bos, eos_token=eos, add_generation_prompt=True
        )
    except TemplateError:
        # Some templates refuse a system message; fold it into the first user turn instead.
        if messages and messages[0]["role"] == "system" and len(messages) > 1:
            merged = [dict(messages[1], content=f"{messages[0]['content']}\n\n{messages[1]['content']}")]
            return render_chat_template(template, merged + messages[2:], bos, eos)
        raise


def chat_format_for(
    prompt_format: str, system_prompt: str, llm: Any, *, base_model: bool = False
) -> ChatFormat:
    """Pick the format: explicit from the profile, or ``auto`` = the model file's own chat template."""
    name = prompt_format
    template = getattr(llm, "chat_template", None)
    if name == "auto":
        name = "model" if template else "plain"
    if base_model:
        logger.warning(
            "the configured model is a base (non-chat) model; answers may ramble. "
            "Use a chat model such as Chinese-Alpaca-2 for question answering."
        )
    return ChatFormat(
        name=name,
        system_prompt=system_prompt_text(system_prompt),
        chat_template=template,
        bos_token=getattr(llm, "bos_token", ""),
        eos_token=getattr(llm, "eos_token", ""),
    )


def source_label(doc: Document) -> str:
    """``file`` or ``file:page`` for a chunk."""
    meta = doc.metadata
    name = str(meta.get("source") or meta.get("file_name") or "?")
    page = meta.get("page")
    return f"{name}:{page}" if page else name


def _where(doc: Document) -> str:
    """The source label, with the section path the chunk sits under (``guide.md — 安装 > OCR``) when the
    loader found headings: a chunk from deep in a manual still says where it is."""
    heading = str(doc.metadata.get("heading") or "").strip()
    return f"{source_label(doc)} — {heading}" if heading else source_label(doc)


def format_context(docs: Sequence[Document], start: int = 1) -> str:
    """Numbered sources; ``start`` keeps the answer's numbering when the chunks come in several groups."""
    return "\n\n".join(f"[{i}] ({_where(d)})\n{d.page_content}" for i, d in enumerate(docs, start))


def history_block(question: str, history: Sequence[Turn]) -> str:
    """Earlier turns as text between the sources and the question (empty without any): the sources then come
    right after the system prompt, so a follow-up over the same passages shares the whole
    system-and-sources prefix with the first question and llama.cpp evaluates only what follows."""
    if not history:
        return ""
    lang = question_language(question)
    head, user, assistant = ("此前的对话：", "用户", "助手") if lang == "zh" else ("Conversation so far:", "User", "Assistant")
    lines = "\n".join(f"{user}: {u}\n{assistant}: {a}" for u, a in history)
    return f"{head}\n{lines}\n\n"


def qa_instruction(question: str, docs: Sequence[Document], start: int = 1, history: Sequence[Turn] = ()) -> str:
    """Instruction, sources, earlier turns, question — in that order (byte-stable for the same sources)."""
    lang = question_language(question)
    return load_prompt(f"qa_{lang}").format(
        context=format_context(docs, start), history=history_block(question, history), question=question
    )


def qa_head(question: str, docs: Sequence[Document], start: int = 1) -> str:
    """The part of :func:`qa_instruction` before the earlier turns and the question: the same for every
    question over the same sources (what a KV cache of the prompt's prefix can be keyed on)."""
    template = load_prompt(f"qa_{question_language(question)}")
    return template.split("{history}", 1)[0].format(context=format_context(docs, start))


def refine_instruction(question: str, answer: str, docs: Sequence[Document], start: int) -> str:
    """Improve an existing answer with the next group of sources (``chain_type = refine``)."""
    return load_prompt(f"refine_{question_language(question)}").format(
        question=question, answer=answer, context=format_context(docs, start)
    )


def combine_instruction(question: str, answers: Sequence[str]) -> str:
    """Merge the partial answers of the groups into one (``chain_type = map_reduce``)."""
    listed = "\n\n".join(f"- {a.strip()}" for a in answers)
    return load_prompt(f"combine_{question_language(question)}").format(question=question, answers=listed)


def summarize_instruction(step: str, text: str, summary: str = "", language: str | None = None) -> str:
    """``step``: ``map`` (one piece), ``reduce`` (merge summaries) or ``refine`` (extend a summary)."""
    lang = language or question_language(text)
    return load_prompt(f"summarize_{step}_{lang}").format(text=text, summary=summary)


def condense_instruction(question: str, history: Sequence[Turn]) -> str:
    lang = question_language(question)
    user, assistant = ("用户", "助手") if lang == "zh" else ("User", "Assistant")
    lines = "\n".join(f"{user}: {u}\n{assistant}: {a}" for u, a in history)
    return load_prompt(f"condense_{lang}").format(history=lines, question=question)


def no_answer_text(question: str) -> str:
    return load_prompt(f"no_answer_{question_language(question)}")
