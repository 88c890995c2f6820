"""The navigation: one Streamlit page per task, the language switch and the models' status line."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from rag_app.errors import RagError
from rag_app.ui.common import friendly, language_switch, load_settings, status_line, t

_PAGES: dict[str, st.Page] = {}


#: (name, icon) of each page; ``rag_app/ui/<name>.py`` is its script.
PAGES = [
    ("chat", ":material/chat:"),
    ("conversations", ":material/history:"),
    ("documents", ":material/description:"),
    ("upload", ":material/upload_file:"),
    ("search", ":material/manage_search:"),
    ("summarize", ":material/summarize:"),
    ("settings", ":material/settings:"),
]
_HERE = Path(__file__).resolve().parent


def page_of(name: str) -> st.Page:
    """The page object for ``st.switch_page`` (built in this run by :func:`main`)."""
    return _PAGES[name]


def main() -> None:
    st.set_page_config(page_title=t("app_title"), page_icon=":material/description:", layout="wide")
    language_switch()
    for name, icon in PAGES:
        _PAGES[name] = st.Page(
            _HERE / f"{name}.py", title=t(f"page_{name}"), icon=icon, url_path=name, default=name == "chat"
        )
    nav = st.navigation(list(_PAGES.values()))
    try:
        load_settings()
    except RagError as exc:
        st.error(friendly(exc))
        st.stop()
    status_line()
    nav.run()
