"""The app people open: ``streamlit run streamlit_app.py`` (or ``make app``).

A multipage Streamlit app (chat, conversations, documents, upload, search, summarize, settings) whose pages
live in :mod:`rag_app.ui`, each a thin face over :class:`rag_app.service.RagService`. Only Streamlit and the
small UI modules are imported here: the service, LangChain, Chroma and the models start in a background
thread behind a status line, so the page appears at once.
"""

from __future__ import annotations

from rag_app.ui.app import main

main()
