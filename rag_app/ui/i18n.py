"""The app's words in English and Chinese. The language follows the browser (``st.context.locale``, else its
Accept-Language header) until the user picks one in the sidebar.
"""

from __future__ import annotations

from typing import Any

LANGUAGES = {"en": "English", "zh": "中文"}
KEY_LANG = "ui_language"

STRINGS: dict[str, tuple[str, str]] = {
    # key: (English, Chinese)
    "app_title": ("Private document Q&A", "本地文档问答"),
    "language": ("Language", "语言"),
    "page_chat": ("Chat", "对话"),
    "page_conversations": ("Conversations", "历史对话"),
    "page_documents": ("Documents", "文档"),
    "page_upload": ("Upload", "上传"),
    "page_search": ("Search", "检索测试"),
    "page_summarize": ("Summarize", "摘要"),
    "page_settings": ("Settings", "设置"),
    "status_starting": ("Starting: reading settings…", "启动中：读取设置…"),
    "status_store": ("Starting: opening the document store…", "启动中：打开文档库…"),
    "status_models": ("Warming up the models…", "正在加载模型…"),
    "status_ready": ("Ready — {llm} · {embedder}", "就绪 — {llm} · {embedder}"),
    "status_error": ("Models not loaded: {error}", "模型未加载：{error}"),
    "waiting_store": ("Opening the document store…", "正在打开文档库…"),
    "demo_mode": ("Demo mode: fake models, canned answers (profile 'fake').", "演示模式：假模型，固定回答（fake 配置）。"),
    "knowledge_base": ("Knowledge base", "知识库"),
    "new_conversation": ("New conversation", "新对话"),
    "ask_placeholder": ("Ask a question about '{kb}'", "就「{kb}」提问"),
    "sources": ("Sources", "来源"),
    "also_retrieved": ("Also retrieved (not cited in the answer):", "同时检索到（回答未引用）："),
    "not_in_docs": ("Not in the documents: the knowledge base holds nothing that answers this.",
                    "文档中没有答案：知识库里没有能回答这个问题的内容。"),
    "stop": ("Stop", "停止"),
    "stopped": ("(stopped)", "（已停止）"),
    "regenerate": ("Regenerate", "重新生成"),
    "copy": ("Copy", "复制"),
    "export": ("Export (Markdown)", "导出（Markdown）"),
    "thinking": ("Searching the documents…", "正在检索文档…"),
    "open_source": ("Open", "打开"),
    "close": ("Close", "关闭"),
    "page_of": ("{source}, page {page} — the cited passage is highlighted", "{source}，第 {page} 页 — 引用段落已高亮"),
    "passage_in_context": ("{source} — the cited passage in its surroundings", "{source} — 引用段落及其上下文"),
    "no_preview": ("The document is no longer stored.", "文档已不在知识库中。"),
    "conversations_none": ("No saved conversations yet.", "还没有保存的对话。"),
    "continue": ("Continue", "继续"),
    "rename": ("Rename", "重命名"),
    "delete": ("Delete", "删除"),
    "title": ("Title", "标题"),
    "messages_n": ("{n} messages", "{n} 条消息"),
    "all_kbs": ("All knowledge bases", "所有知识库"),
    "documents_none": ("No documents in this knowledge base yet — add some on the Upload page.",
                       "这个知识库还没有文档 — 请在「上传」页面添加。"),
    "col_document": ("Document", "文档"), "col_pages": ("Pages", "页数"), "col_chunks": ("Chunks", "片段"),
    "col_size": ("Size", "大小"), "col_date": ("Ingested", "导入时间"), "col_status": ("Status", "状态"),
    "col_warnings": ("Warnings", "警告"),
    "status_complete": ("ready", "可用"), "status_alias": ("copy of {of}", "与 {of} 相同"),
    "reingest": ("Re-ingest", "重新导入"),
    "chunk_browser": ("Chunks of {source}", "{source} 的片段"),
    "document_pick": ("Document", "文档"),
    "deleted_doc": ("Deleted {source} ({chunks} chunks).", "已删除 {source}（{chunks} 个片段）。"),
    "delete_kb": ("Delete this knowledge base", "删除这个知识库"),
    "delete_kb_confirm": ("Type the name '{kb}' to confirm: all its documents and conversations are deleted.",
                          "输入名称「{kb}」确认：其中所有文档和对话都将被删除。"),
    "deleted_kb": ("Deleted knowledge base '{kb}' ({chunks} chunks).", "已删除知识库「{kb}」（{chunks} 个片段）。"),
    "not_kept": ("not uploaded through the app: open and re-ingest from its folder",
                 "不是通过应用上传的：请从原文件夹打开或重新导入"),
    "upload_target": ("Into knowledge base", "导入到知识库"),
    "new_kb": ("…or a new one", "…或新建一个"),
    "new_kb_placeholder": ("name of a new knowledge base", "新知识库的名称"),
    "formats": ("Documents ({formats}; a .zip of them too)", "文档（{formats}；也可以打包成 .zip）"),
    "ingest": ("Ingest", "导入"),
    # Streamlit's own words in the file uploader (it has no translations; drawn over by CSS in Chinese).
    "uploader_button": ("Upload", "选择文件"),
    "uploader_limit": ("{mb}MB per file", "每个文件不超过 {mb}MB"),
    "uploader_drop": ("Drag and drop files here", "将文件拖放到此处"),
    "loading_embedder": ("Loading the embedding model…", "正在加载嵌入模型…"),
    "progress": ("{done}/{total} files", "{done}/{total} 个文件"),
    "eta": ("about {s} s left", "约剩 {s} 秒"),
    "waiting": ("Waiting for another ingestion to finish…", "正在等待另一个导入任务完成…"),
    "done": ("Done", "完成"),
    "report_summary": ("Knowledge base '{kb}': {summary}", "知识库「{kb}」：{summary}"),
    "failed": ("Failed", "失败"), "skipped": ("Skipped", "跳过"), "duplicate": ("Duplicate", "重复"),
    "added": ("Added", "已添加"), "replaced": ("Replaced", "已替换"), "unchanged": ("Unchanged", "未变化"),
    "password_for": ("Password for {name}", "{name} 的密码"),
    "retry_password": ("Ingest with the password", "用密码导入"),
    "needs_password": ("{name} is encrypted: give its password below.", "{name} 已加密：请在下面输入密码。"),
    "search_query": ("Query", "查询"),
    "search_run": ("Search", "检索"),
    "search_weight": ("Mode: {mode} · vector weight for this question: {weight} (BM25 = 1)",
                      "模式：{mode} · 该问题的向量权重：{weight}（BM25 = 1）"),
    "search_unanswerable": ("The relevance check would answer \"not in the documents\" (results shown anyway).",
                            "相关性检查会回答「文档中没有答案」（仍显示结果）。"),
    "search_none": ("Nothing found.", "没有找到结果。"),
    "score_line": ("fused {score} · vector {vector} · keyword {keyword} · coverage {coverage}",
                   "融合 {score} · 向量 {vector} · 关键词 {keyword} · 覆盖率 {coverage}"),
    "summarize_doc": ("Document to summarize", "要摘要的文档"),
    "summarize_method": ("Method", "方法"),
    "summarize_run": ("Summarize", "生成摘要"),
    "summarize_progress": ("Summarizing: part {done} of {total}", "正在摘要：第 {done}/{total} 部分"),
    "summarize_none": ("No kept documents to summarize: upload one on the Upload page.",
                       "没有可摘要的文档：请在「上传」页面上传。"),
    "settings_saved": ("Saved to {path}. The app now uses these settings.", "已保存到 {path}。应用已使用新设置。"),
    "settings_save": ("Save settings", "保存设置"),
    "settings_file": ("Settings file: {path}", "设置文件：{path}"),
    "models_in_use": ("Models in use", "正在使用的模型"),
    "llm_in_use": ("Language model", "语言模型"),
    "embedder_in_use": ("Embedder", "嵌入模型"),
    "doctor": ("What these settings do on this machine (rag doctor)", "这些设置在本机的效果（rag doctor）"),
    "doctor_ok": ("The model fits this machine.", "模型适合本机。"),
    "doctor_problems": ("Problems:", "问题："),
    "profile": ("Profile", "配置"), "model_file": ("Model file", "模型文件"), "backend": ("Backend", "后端"),
    "n_ctx": ("Context window (tokens, or auto)", "上下文窗口（token 数，或 auto）"),
    "k": ("Chunks per question (k)", "每个问题的片段数（k）"),
    "context_budget": ("Context budget (tokens, or a share of the window ≤ 1)", "上下文预算（token 数，或窗口比例 ≤ 1）"),
    "retrieval_mode": ("Retrieval mode", "检索模式"), "chain_type": ("Chain type", "链类型"),
    "system_prompt": ("System prompt ('default', 'long' or your own text)", "系统提示（default、long 或自定义文本）"),
    "none_option": ("(none)", "（无）"),
    "embedder": ("Embedder", "嵌入模型"),
    "hint_empty_kb": ("upload documents on the Upload page first", "请先在「上传」页面导入文档"),
    "hint_kb_missing": ("pick an existing knowledge base, or upload documents into this one",
                        "请选择已有的知识库，或向这个知识库上传文档"),
}


def language_from(locale: str | None, accept_language: str | None = None) -> str:
    """``zh`` when the browser prefers Chinese, else ``en``."""
    for value in (locale, accept_language):
        if value:
            first = value.split(",")[0].strip().lower()
            return "zh" if first.startswith("zh") else "en"
    return "en"


def translate(lang: str, key: str, **values: Any) -> str:
    en, zh = STRINGS[key]
    text = zh if lang == "zh" else en
    return text.format(**values) if values else text
