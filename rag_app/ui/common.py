"""What every page shares: the language, the settings, the service warming up behind a status line, the
knowledge-base picker and friendly errors.

The service is built in a background thread (importing LangChain and Chroma alone takes seconds on a small
machine), so a page paints at once and only the parts that need the store wait for it.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

import streamlit as st

from rag_app.errors import EmptyKnowledgeBaseError, KnowledgeBaseNotFoundError, RagError
from rag_app.ui.i18n import KEY_LANG, LANGUAGES, language_from, translate

if TYPE_CHECKING:
    from rag_app.service import RagService
    from rag_app.settings import Settings

logger = logging.getLogger(__name__)

KEY_SETTINGS = "settings"
KEY_KB = "kb"
KEY_SETTINGS_GEN = "settings_generation"
#: The chosen knowledge base in the page's address (``?kb=…``), so that a reload or a bookmark keeps it.
QUERY_KB = "kb"


def lang() -> str:
    """The UI language: the user's choice, else the browser's."""
    if KEY_LANG not in st.session_state:
        locale = getattr(st.context, "locale", None)
        accept = st.context.headers.get("Accept-Language") if st.context.headers else None
        st.session_state[KEY_LANG] = language_from(locale, accept)
    return str(st.session_state[KEY_LANG])


def t(key: str, **values: Any) -> str:
    return translate(lang(), key, **values)


def language_switch() -> None:
    lang()
    st.sidebar.selectbox(
        "Language / 语言", list(LANGUAGES), key=KEY_LANG, format_func=LANGUAGES.__getitem__
    )


def friendly(exc: RagError) -> str:
    """One line for the user: the error and what to do about it *in this app* (the library's hints name CLI
    commands)."""
    if isinstance(exc, EmptyKnowledgeBaseError):
        return f"{exc} — {t('hint_empty_kb')}"
    if isinstance(exc, KnowledgeBaseNotFoundError):
        return f"{exc} — {t('hint_kb_missing')}"
    return exc.friendly()


def load_settings() -> Settings:
    """Settings built once per browser session, at the first script run (never at import)."""
    from rag_app.settings import Settings

    if KEY_SETTINGS not in st.session_state:
        st.session_state[KEY_SETTINGS] = Settings.load()
    settings: Settings = st.session_state[KEY_SETTINGS]
    return settings


#: Longest the warm-up waits for the first page's title before it starts importing (seconds).
PAINT_GRACE_S = 1.0


def header(key: str) -> None:
    """The page's title; drawing it lets the warm-up start (see :attr:`Warmup.painted`)."""
    st.title(t(key))
    warmup().painted.set()


class Warmup:
    """Builds the service, opens the store and loads both models in a background thread; the status line
    shows how far it got. Pages wait only for the service (:meth:`service`), never for the models."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stage = "starting"
        self.error: str | None = None
        self._service: Any = None
        self._ready = threading.Event()
        #: Set once the page has drawn its title: the heavy imports wait for it (at most PAINT_GRACE_S), so
        #: that they do not hold the interpreter while the first page is being drawn.
        self.painted = threading.Event()
        self.thread = threading.Thread(target=self._run, name="rag-warmup", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.painted.wait(PAINT_GRACE_S)
        try:
            from rag_app import service as service_module

            factory = getattr(service_module, "open_service", service_module.RagService)
            self._service = factory(self.settings)
        except RagError as exc:
            self.error, self.stage = exc.friendly(), "error"
            self._ready.set()
            return
        self.stage = "store"
        try:
            self._service.knowledge_bases()  # from the manifest; Chroma opens in warm_up (open_client's lock)
        except RagError as exc:
            logger.warning("store not ready: %s", exc)
        finally:
            self._ready.set()
        self.stage = "models"
        try:
            warm = getattr(self._service, "warm_up", None)
            if warm is not None:
                warm()
            self.stage = "ready"
        except RagError as exc:  # e.g. a missing model file: chat says so when asked
            self.error, self.stage = exc.friendly(), "error"
        except Exception as exc:  # a background thread must not die silently
            logger.exception("warm-up failed")
            self.error, self.stage = str(exc), "error"

    def service(self, timeout: float | None = None) -> RagService | None:
        """The service once its store is open (Chroma's first client must not be opened by two threads
        at once), or ``None`` when it is not ready within ``timeout`` or failed."""
        if not self._ready.wait(timeout):
            return None
        return self._service  # type: ignore[no-any-return]


@st.cache_resource(show_spinner=False)
def _warmup(settings_key: str, _settings: Settings) -> Warmup:
    """One service (and so one copy of each model) per process and distinct settings."""
    return Warmup(_settings)


def warmup() -> Warmup:
    settings = load_settings()
    return _warmup(settings.model_dump_json(), settings)


def service() -> RagService:
    """The service, waiting (with a spinner) while it starts; a settings error stops the page."""
    warm = warmup()
    svc = warm.service(0)
    if svc is None and warm.stage != "error":
        with st.spinner(t("waiting_store")):
            svc = warm.service()
    if svc is None:
        st.error(warm.error or "the service did not start")
        st.stop()
    return svc


#: Seconds between refreshes of the status line while the models warm up.
STATUS_REFRESH_S = 1.0


def model_names(svc: Any, settings: Settings) -> tuple[str, str]:
    """(LLM file, embedder) as the service names them (:meth:`RagService.models_in_use`); through a server,
    which cannot say, what the settings name."""
    describe = getattr(svc, "models_in_use", None) if svc is not None else None
    if describe is not None:
        try:
            models = describe()
            return str(models.llm), str(models.embedder)
        except RagError as exc:
            logger.warning("cannot name the models in use: %s", exc)
    conf = settings
    llm = conf.llm.model or (conf.llm.model_path.name if conf.llm.model_path else conf.llm.backend)
    emb = conf.embedding.model_path.name if conf.embedding.model_path else conf.embedding.backend
    return llm, emb


def _status_text(warm: Warmup) -> str:
    from rag_app.ui.render import escape_markdown

    if warm.stage in ("ready", "models"):
        llm, emb = (escape_markdown(n) for n in model_names(warm.service(0), warm.settings))
        if warm.stage == "ready":
            return ":material/check_circle: " + t("status_ready", llm=llm, embedder=emb)
        return ":material/hourglass_top: " + t("status_models") + f" ({llm} · {emb})"
    if warm.stage == "error":
        return ":material/error: " + t("status_error", error=warm.error)
    return ":material/hourglass_top: " + t(f"status_{warm.stage}")


def status_line() -> None:
    """The sidebar's one line about the models: starting, warming up, ready (with which), or why not. While
    they warm up it refreshes itself (a fragment: only this line reruns, not the page)."""
    warm = warmup()
    settled = warm.stage in ("ready", "error")

    def line() -> None:
        st.caption(_status_text(warm))

    with st.sidebar:
        st.fragment(line, run_every=None if settled else STATUS_REFRESH_S)()
        if warm.settings.llm.backend == "fake":
            st.caption(t("demo_mode"))


def kb_from_url() -> None:
    """The knowledge base of the page's address: taken once per browser session (a reload is a new one), and
    written back on every run, so that it stays in the address on pages without a picker. :func:`kb_picker`
    checks that it exists (else the default is shown)."""
    wanted = st.query_params.get(QUERY_KB)
    if KEY_KB not in st.session_state and wanted:
        st.session_state[KEY_KB] = wanted
    _kb_to_url(st.session_state.get(KEY_KB))


def _kb_to_url(name: str | None) -> None:
    if name and st.query_params.get(QUERY_KB) != name:
        st.query_params[QUERY_KB] = name


def kb_picker(svc: RagService, page: str, *, label: str | None = None) -> str:
    """The knowledge base every page works on (one choice shared by the pages)."""
    settings = load_settings()
    try:
        counts = {kb.name: kb.chunks for kb in svc.knowledge_bases()}
    except RagError as exc:
        st.error(friendly(exc))
        counts = {}
    options = sorted(set(counts) | {settings.knowledge_base})
    if st.session_state.get(KEY_KB) not in options:
        st.session_state[KEY_KB] = settings.knowledge_base if settings.knowledge_base in options else options[0]
    # A page's own widget key, synced with the shared choice (widget state does not survive a page switch).
    widget_key = f"{KEY_KB}_{page}"
    st.session_state[widget_key] = st.session_state[KEY_KB]

    def _sync() -> None:
        st.session_state[KEY_KB] = st.session_state[widget_key]

    selected: str = st.selectbox(
        label or t("knowledge_base"),
        options,
        key=widget_key,
        on_change=_sync,
        # Language-neutral, so that switching the language keeps the selection: name (chunks).
        format_func=lambda n: f"{n} ({counts.get(n, 0)})",
    )
    _kb_to_url(selected)
    return selected


#: Where Streamlit's file uploader writes its own English words (Streamlit 1.67's markup): the button's label,
#: the size limit under it, the text shown while files are dragged over it.
_UPLOADER_TEXT = {
    "uploader_button": '[data-testid="stFileUploaderDropzone"] button [data-testid="stMarkdownContainer"] > p',
    "uploader_limit": '[data-testid="stFileUploaderDropzoneInstructions"] > div > span',
    "uploader_drop": '[data-testid="stFileUploaderDropzone"] > input + div > span',
}


#: The size Streamlit draws them in (its small text, 14 px): the hidden English text's own size is 0.
_UPLOADER_FONT = "0.875rem"


def _css_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


def uploader_css(language: str, max_upload_mb: int) -> str:
    """A ``<style>`` that writes the file uploader's words in ``language`` over Streamlit's English ones
    (which it cannot translate): each English text is hidden and collapsed, its translation drawn in its
    place (``::after``, so it keeps the element's colour and font). Empty for English."""
    if language == "en":
        return ""
    rules = []
    for key, selector in _UPLOADER_TEXT.items():
        text = translate(language, key, mb=max_upload_mb) if key == "uploader_limit" else translate(language, key)
        rules.append(f"{selector} {{ font-size: 0 !important; visibility: hidden; }}")
        drawn = f"content: {_css_string(text)}; font-size: {_UPLOADER_FONT}; visibility: visible;"
        rules.append(f"{selector}::after {{ {drawn} }}")
    return "<style>\n" + "\n".join(rules) + "\n</style>"


def uploader_in_language() -> None:
    """Streamlit's own uploader words follow the UI language (see :func:`uploader_css`)."""
    css = uploader_css(lang(), int(st.get_option("server.maxUploadSize")))
    if css:
        st.html(css)
