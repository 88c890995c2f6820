"""The navigation: one Streamlit page per task, the language switch and the models' status line."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from rag_app.errors import RagError
from rag_app.ui.common import friendly, kb_from_url, language_switch, load_settings, status_line, t

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
#: The tab's icon, inline: a ``:material/...:`` page icon makes the browser fetch it from fonts.gstatic.com
#: (Streamlit draws Material favicons from Google's servers); this one is a data: URL, fetched from nowhere.
FAVICON_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><path fill="#1f6feb" d="M6 2h8l6 6v12a2 2 0 0 1-2 '
    '2H6a2 2 0 0 1-2-2V4a2 2 0 0 1 2-2z"/><path fill="#fff" d="M13 3.5V9h5.5zM7 12h10v1.6H7zm0 3.4h10V17H7z"/></svg>'
)


def page_of(name: str) -> st.Page:
    """The page object for ``st.switch_page`` (built in this run by :func:`main`)."""
    return _PAGES[name]


def main() -> None:
    st.set_page_config(page_title=t("app_title"), page_icon=FAVICON_SVG, layout="wide")
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
    kb_from_url()
    status_line()
    nav.run()
