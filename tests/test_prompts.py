"""Prompt templates (pinned word for word) and the chat formats that wrap them for each model family."""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path
from types import SimpleNamespace

import pytest
from langchain_core.documents import Document

from rag_app.errors import SettingsError
from rag_app.prompting import (
    ChatFormat,
    chat_format_for,
    condense_instruction,
    format_context,
    load_prompt,
    no_answer_text,
    qa_instruction,
    question_language,
    render_chat_template,
    source_label,
    system_prompt_text,
)

REPO = Path(__file__).resolve().parent.parent

SYSTEM_DEFAULT = "You are a helpful assistant. 你是一个乐于助人的助手。"

# Every template file, word for word. Changing a template (or adding one) must change this table.
PINNED: dict[str, str] = {
    "format_llama2_chat": "[INST] <<SYS>>\n{system_prompt}\n<</SYS>>\n\n{instruction} [/INST]",
    "format_llama2_chat_next": "<s>[INST] {instruction} [/INST]",
    "format_llama2_chat_answer": " {answer}</s>",
    "format_alpaca": (
        "Below is an instruction that describes a task. Write a response that appropriately completes "
        "the request.\n\n### Instruction:\n{instruction}\n\n### Response: "
    ),
    "system_default": SYSTEM_DEFAULT,
    "system_long": SYSTEM_DEFAULT + "请你提供专业、有逻辑、内容真实、有价值的详细回复。",
    "qa_en": (
        "Answer the question using only the sources below. If the sources do not contain the answer, reply "
        '"The documents do not contain the answer." and do not make one up.\n\nSources:\n{context}\n\n'
        "{history}Question: {question}\nAnswer in one complete sentence."
    ),
    "qa_zh": (
        "请根据下面的资料回答问题。只使用资料中的信息；如果资料中没有答案，请直接回答“资料中没有找到答案。”，"
        "不要编造。\n\n资料：\n{context}\n\n{history}问题：{question}\n请用完整的句子回答。"
    ),
    "condense_en": (
        "Below are a conversation and a follow-up question. Rewrite the follow-up question as a complete, "
        "standalone question that can be understood without the conversation. Output only the rewritten "
        "question.\n\nConversation:\n{history}\n\nFollow-up question: {question}"
    ),
    "condense_zh": (
        "下面是一段对话和一个后续问题。请把后续问题改写成一个完整、独立的问题，使它离开对话也能被理解。"
        "只输出改写后的问题。\n\n对话：\n{history}\n\n后续问题：{question}"
    ),
    "no_answer_en": "The documents do not contain information that answers this question.",
    "no_answer_zh": "文档中没有找到与这个问题相关的内容，因此无法回答。",
    "refine_en": (
        "Below are an existing answer to a question and more numbered sources. Improve the existing answer "
        "using the new sources where they help; keep it if they do not. Use only information from the sources, "
        "keep the citations [1], [2] of the existing answer and cite the new sources you use. Output only the "
        "improved answer.\n\nQuestion: {question}\n\nExisting answer:\n{answer}\n\nMore sources:\n{context}"
    ),
    "refine_zh": (
        "下面是一个问题的已有回答和更多编号资料。如果新资料有帮助，请用它完善已有回答；如果没有帮助，保留原回答。"
        "只使用资料中的信息，保留已有回答中的 [1]、[2] 编号，并注明所用新资料的编号。只输出完善后的回答。"
        "\n\n问题：{question}\n\n已有回答：\n{answer}\n\n更多资料：\n{context}"
    ),
    "combine_en": (
        "Below are partial answers to a question, each written from a different part of the documents. Combine "
        "them into one answer. Use only what they say, keep their citations [1], [2], and if none of them "
        'contains the answer, reply "The documents do not contain the answer."\n\nQuestion: {question}'
        "\n\nPartial answers:\n{answers}"
    ),
    "combine_zh": (
        "下面是同一个问题的几个部分回答，分别依据文档的不同部分写成。请把它们合并成一个回答。只使用其中的信息，"
        "保留 [1]、[2] 这样的编号；如果都没有答案，请直接回答“资料中没有找到答案。”\n\n问题：{question}"
        "\n\n部分回答：\n{answers}"
    ),
    "summarize_map_en": (
        "Summarize the following text in a few sentences. Keep the key facts, names and numbers; add nothing "
        "that is not in the text.\n\nText:\n{text}"
    ),
    "summarize_map_zh": "请用几句话概括下面的文字。保留关键事实、名称和数字，不要添加文中没有的内容。\n\n文字：\n{text}",
    "summarize_reduce_en": (
        "Below are summaries of consecutive parts of one document. Combine them into one coherent summary of "
        "the whole document. Keep the key facts; add nothing new.\n\nSummaries:\n{text}"
    ),
    "summarize_reduce_zh": (
        "下面是同一份文档中连续几部分的摘要。请把它们合并成一份连贯的全文摘要。保留关键事实，不要添加新内容。"
        "\n\n摘要：\n{text}"
    ),
    "summarize_refine_en": (
        "Below are a summary of the first part of a document and the text that follows it. Extend the summary "
        "so that it also covers the new text. Keep the key facts; add nothing that is not in the text. Output "
        "only the new summary.\n\nSummary so far:\n{summary}\n\nFollowing text:\n{text}"
    ),
    "summarize_refine_zh": (
        "下面是一份文档前面部分的摘要，以及紧接着的文字。请扩充摘要，使它也涵盖新的文字。保留关键事实，"
        "不要添加文中没有的内容。只输出新的摘要。\n\n已有摘要：\n{summary}\n\n后续文字：\n{text}"
    ),
    "low_support_en": (
        "Note: little of this answer was found in the sources it cites. Check it against the sources before "
        "relying on it."
    ),
    "low_support_zh": "注意：这个回答的内容在所引用的资料中找不到多少依据，请对照资料核实后再使用。",
}

# SmolLM2-Instruct's ChatML template (as stored in its GGUF).
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% endif %}"
)

# A Mistral-style template that refuses a system message.
NO_SYSTEM_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% else %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)


def template_files(folder: object) -> set[str]:
    return {p.name[: -len(".txt")] for p in folder.iterdir() if p.name.endswith(".txt")}  # type: ignore[attr-defined]


# --- pinned texts --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PINNED))
def test_template_text_is_pinned(name: str) -> None:
    assert load_prompt(name) == PINNED[name]


@pytest.mark.parametrize("name", sorted(PINNED))
def test_template_file_matches_loaded_text(name: str) -> None:
    raw = (REPO / "prompts" / f"{name}.txt").read_text(encoding="utf-8")
    assert raw in (PINNED[name], PINNED[name] + "\n")


def test_every_template_file_is_pinned() -> None:
    assert template_files(REPO / "prompts") == set(PINNED)


def test_installed_package_ships_the_templates() -> None:
    folder = resources.files("rag_app.prompts")
    assert template_files(folder) == set(PINNED)
    for name, text in PINNED.items():
        assert folder.joinpath(f"{name}.txt").read_text(encoding="utf-8").rstrip("\n") == text


def test_system_long_extends_default_without_space() -> None:
    assert load_prompt("system_long").startswith(load_prompt("system_default") + "请")


def test_unknown_template_is_settings_error() -> None:
    with pytest.raises(SettingsError, match="no_such_template"):
        load_prompt("no_such_template")


def test_system_prompt_text() -> None:
    assert system_prompt_text("default") == PINNED["system_default"]
    assert system_prompt_text("long") == PINNED["system_long"]
    assert system_prompt_text("You answer in French.") == "You answer in French."


# --- formats -------------------------------------------------------------------------------------


def test_llama2_chat_single_turn() -> None:
    fmt = ChatFormat("llama2-chat", "SYS")
    assert fmt.render("q1") == "[INST] <<SYS>>\nSYS\n<</SYS>>\n\nq1 [/INST]"
    assert fmt.stop == []


def test_llama2_chat_multi_turn() -> None:
    fmt = ChatFormat("llama2-chat", "SYS")
    assert fmt.render("q2", [("q1", "a1")]) == "[INST] <<SYS>>\nSYS\n<</SYS>>\n\nq1 [/INST] a1</s><s>[INST] q2 [/INST]"
    assert fmt.render("q3", [("q1", "a1"), ("q2", "a2")]) == (
        "[INST] <<SYS>>\nSYS\n<</SYS>>\n\nq1 [/INST] a1</s><s>[INST] q2 [/INST] a2</s><s>[INST] q3 [/INST]"
    )


def test_llama2_chat_with_default_system_prompt_and_braces() -> None:
    fmt = ChatFormat("llama2-chat", system_prompt_text("default"))
    # braces in user text are content, not format fields
    out = fmt.render("what is {x}?")
    assert out == f"[INST] <<SYS>>\n{SYSTEM_DEFAULT}\n<</SYS>>\n\nwhat is {{x}}? [/INST]"


def test_alpaca() -> None:
    fmt = ChatFormat("alpaca", "ignored")
    head = (
        "Below is an instruction that describes a task. Write a response that appropriately completes "
        "the request.\n\n### Instruction:\n"
    )
    assert fmt.render("q1") == head + "q1\n\n### Response: "
    assert fmt.render("q2", [("q1", "a1")]) == (head + "q1\n\n### Response: a1\n\n" + head + "q2\n\n### Response: ")
    assert fmt.stop == ["### Instruction:"]


def test_plain() -> None:
    fmt = ChatFormat("plain", "ignored")
    assert fmt.render("q1") == "q1\n"
    assert fmt.render("q2", [("q1", "a1")]) == "Q: q1\nA: a1\n\nq2\n"
    assert fmt.stop == ["\nQ:"]


def test_model_template_chatml() -> None:
    fmt = ChatFormat("model", "SYS", chat_template=CHATML_TEMPLATE)
    assert fmt.render("q1") == (
        "<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\n"
    )
    assert fmt.render("q2", [("q1", "a1")]) == (
        "<|im_start|>system\nSYS<|im_end|>\n"
        "<|im_start|>user\nq1<|im_end|>\n"
        "<|im_start|>assistant\na1<|im_end|>\n"
        "<|im_start|>user\nq2<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_model_template_without_system_role_folds_system_into_first_user_turn() -> None:
    fmt = ChatFormat("model", "SYS", chat_template=NO_SYSTEM_TEMPLATE, bos_token="<s>", eos_token="</s>")
    assert fmt.render("q1") == "<s>[INST] SYS\n\nq1 [/INST]"
    assert fmt.render("q2", [("q1", "a1")]) == "<s>[INST] SYS\n\nq1 [/INST]a1</s>[INST] q2 [/INST]"


def test_model_format_without_template_falls_back_to_plain() -> None:
    assert ChatFormat("model", "SYS").render("q1") == "q1\n"


def test_render_chat_template_is_sandboxed() -> None:
    from jinja2.exceptions import SecurityError

    evil = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(SecurityError):
        render_chat_template(evil, [{"role": "user", "content": "x"}], "", "")


# --- choosing the format -------------------------------------------------------------------------


def fake_llm(chat_template: str | None = None, bos: str = "", eos: str = "") -> SimpleNamespace:
    return SimpleNamespace(chat_template=chat_template, bos_token=bos, eos_token=eos)


def test_auto_uses_model_template_when_present() -> None:
    fmt = chat_format_for("auto", "default", fake_llm(CHATML_TEMPLATE, "<s>", "</s>"))
    assert fmt.name == "model"
    assert fmt.chat_template == CHATML_TEMPLATE
    assert fmt.system_prompt == SYSTEM_DEFAULT
    assert fmt.bos_token == "<s>" and fmt.eos_token == "</s>"
    assert fmt.render("hi").startswith(f"<|im_start|>system\n{SYSTEM_DEFAULT}<|im_end|>")


def test_auto_without_template_is_plain() -> None:
    from rag_app.llm.fake import FakeLLM

    assert chat_format_for("auto", "default", fake_llm(None)).name == "plain"
    assert chat_format_for("auto", "default", FakeLLM(responses=["x"])).name == "plain"


def test_explicit_format_wins_over_model_template() -> None:
    fmt = chat_format_for("llama2-chat", "long", fake_llm(CHATML_TEMPLATE))
    assert fmt.name == "llama2-chat"
    assert fmt.render("q").startswith(f"[INST] <<SYS>>\n{PINNED['system_long']}\n<</SYS>>")


def test_base_model_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="rag_app.prompting"):
        chat_format_for("plain", "default", fake_llm(), base_model=True)
    assert any("base" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_no_warning_for_chat_model(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="rag_app.prompting"):
        chat_format_for("llama2-chat", "default", fake_llm(), base_model=False)
    assert not [r for r in caplog.records if r.name == "rag_app.prompting"]


# --- instructions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("怎样导入文档？", "zh"),
        ("What is RAG?", "en"),
        ("What does 知识库 mean?", "zh"),
        ("", "en"),
        ("1234 !?", "en"),
        ("中華民國", "zh"),
    ],
)
def test_question_language(text: str, lang: str) -> None:
    assert question_language(text) == lang


def docs() -> list[Document]:
    return [
        Document(page_content="Cats purr.", metadata={"source": "pets/cats.txt", "file_name": "cats.txt"}),
        Document(page_content="第二页内容", metadata={"source": "manual.pdf", "page": 2}),
    ]


def test_source_label_and_context() -> None:
    d = docs()
    assert source_label(d[0]) == "pets/cats.txt"
    assert source_label(d[1]) == "manual.pdf:2"
    assert source_label(Document(page_content="x", metadata={"file_name": "f.md"})) == "f.md"
    assert format_context(d) == "[1] (pets/cats.txt)\nCats purr.\n\n[2] (manual.pdf:2)\n第二页内容"


def test_qa_instruction_language() -> None:
    en = qa_instruction("Do cats purr?", docs())
    assert en == PINNED["qa_en"].format(context=format_context(docs()), history="", question="Do cats purr?")
    zh = qa_instruction("猫会发出呼噜声吗？", docs())
    assert zh == PINNED["qa_zh"].format(context=format_context(docs()), history="", question="猫会发出呼噜声吗？")


def test_condense_instruction_language() -> None:
    en = condense_instruction("And dogs?", [("Do cats purr?", "Yes [1].")])
    assert en == PINNED["condense_en"].format(history="User: Do cats purr?\nAssistant: Yes [1].", question="And dogs?")
    zh = condense_instruction("那狗呢？", [("猫会叫吗？", "会。"), ("鸟呢？", "也会。")])
    assert zh == PINNED["condense_zh"].format(
        history="用户: 猫会叫吗？\n助手: 会。\n用户: 鸟呢？\n助手: 也会。", question="那狗呢？"
    )


def test_no_answer_text_language() -> None:
    assert no_answer_text("What is this?") == PINNED["no_answer_en"]
    assert no_answer_text("这是什么？") == PINNED["no_answer_zh"]


def test_context_says_which_section_a_chunk_is_from() -> None:
    from rag_app.prompting import format_context

    docs = [
        Document(page_content="装好 rapidocr 后自动识别。", metadata={"source": "guide.md", "heading": "安装 > OCR"}),
        Document(page_content="Page text.", metadata={"source": "a.pdf", "page": 3}),
    ]
    assert format_context(docs) == "[1] (guide.md — 安装 > OCR)\n装好 rapidocr 后自动识别。\n\n[2] (a.pdf:3)\nPage text."
