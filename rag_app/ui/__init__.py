"""The Streamlit app's pages: each a thin face over :class:`rag_app.service.RagService`.

``streamlit_app.py`` is the entry (``streamlit run streamlit_app.py``); :func:`rag_app.ui.app.main` builds the
navigation. Nothing here reads settings or loads a model at import, so the first paint is fast.
"""
