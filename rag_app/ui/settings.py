"""Settings: the common knobs, checked exactly as the CLI checks them (the same :class:`SettingsError`),
saved to the settings file; and what ``rag doctor`` says about them on this machine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import streamlit as st

from rag_app.errors import RagError
from rag_app.ui.common import KEY_SETTINGS, friendly, header, load_settings, model_names, service, t
from rag_app.ui.render import escape_markdown

if TYPE_CHECKING:
    from rag_app.settings import Settings

KEY_SAVED = "settings_saved"


def parse_number(text: str, *, allow_auto: bool = False) -> float | int | str | None:
    """A form field as a settings value: empty → unset, ``auto``, an integer, or a share (float)."""
    text = text.strip()
    if not text:
        return None
    if allow_auto and text.lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text  # the settings check says what is wrong with it


def _render_doctor(report: dict[str, Any]) -> None:
    with st.expander(t("doctor"), expanded=not report["ok"]):
        if report["ok"]:
            st.success(t("doctor_ok"))
        else:
            st.error(t("doctor_problems") + " " + "; ".join(report["problems"]))
        llm, emb, machine = report["llm"], report["embedding"], report["machine"]
        lines = [
            f"- machine: {machine['cpus']} CPUs, RAM {machine['ram_available'] / 2**30:.1f} of "
            f"{machine['ram_total'] / 2**30:.1f} GiB available",
            f"- llm: {llm['backend']} {llm.get('model_file', '')}",
        ]
        if "n_ctx" in llm:
            lines.append(f"- n_ctx {llm['n_ctx']} (setting: {llm['n_ctx_setting']})")
        if "memory" in llm:
            mem = llm["memory"]
            need = (mem["ram_needed"] + mem["vram_needed"]) / 2**30
            lines.append(f"- memory: {need:.2f} GiB needed — {'fits' if mem['fits'] else 'DOES NOT FIT'}")
        lines.append(f"- embedding: {emb['backend']} {emb.get('model', '')} on {emb['device']}")
        lines += [f"- note: {n}" for n in report["notes"]]
        st.markdown("\n".join(lines))
        st.json(report, expanded=False)


def _render_models(svc: Any, conf: Settings) -> None:
    """The model files answering and embedding now (the file names people find on disk), with their paths."""
    describe = getattr(svc, "models_in_use", None)
    try:
        models = describe() if describe is not None else None
    except RagError as exc:
        st.error(friendly(exc))
        return
    if models is None:  # through a server: it does not say
        llm, emb = model_names(svc, conf)
        rows = [(t("llm_in_use"), llm, None), (t("embedder_in_use"), emb, None)]
    else:
        rows = [(t("llm_in_use"), models.llm, models.llm_path),
                (t("embedder_in_use"), models.embedder, models.embedder_path)]
    lines = [f"**{t('models_in_use')}**"]
    for label, name, path in rows:
        where = "" if not path else f" — `{path}`" if "`" not in path else f" — {escape_markdown(path)}"
        lines.append(f"- {label}: **{escape_markdown(name)}**{where}")
    st.markdown("\n".join(lines))


def page() -> None:
    from rag_app.llm import backend_names
    from rag_app.settings import builtin_profiles, settings_file

    header("page_settings")
    svc = service()
    saved = st.session_state.pop(KEY_SAVED, None)
    if saved:
        st.success(t("settings_saved", path=saved))
    conf = load_settings()
    st.caption(t("settings_file", path=settings_file().resolve()))
    _render_models(svc, conf)
    profiles = [None, *sorted(builtin_profiles())]
    backends = backend_names()
    with st.form("settings_form"):
        profile = st.selectbox(
            t("profile"), profiles, index=profiles.index(conf.profile) if conf.profile in profiles else 0,
            format_func=lambda p: t("none_option") if p is None else p,
        )
        model_path = st.text_input(t("model_file"), value=str(conf.llm.model_path or ""))
        backend = st.selectbox(
            t("backend"), backends, index=backends.index(conf.llm.backend) if conf.llm.backend in backends else 0
        )
        n_ctx = st.text_input(t("n_ctx"), value="" if conf.llm.n_ctx is None else str(conf.llm.n_ctx))
        k = st.number_input(t("k"), min_value=1, max_value=100, value=conf.retrieval.k)
        budget = st.text_input(
            t("context_budget"), value="" if conf.retrieval.context_budget is None else f"{conf.retrieval.context_budget:g}"
        )
        modes = ["hybrid", "vector", "bm25"]
        mode = st.selectbox(t("retrieval_mode"), modes, index=modes.index(conf.retrieval.mode))
        chains = ["auto", "stuff", "refine", "map_reduce"]
        chain_type = st.selectbox(t("chain_type"), chains, index=chains.index(conf.retrieval.chain_type))
        system_prompt = st.text_area(t("system_prompt"), value=conf.llm.system_prompt)
        submitted = st.form_submit_button(t("settings_save"), type="primary")
    if submitted:
        updates: dict[str, Any] = {
            "profile": profile,
            "llm": {
                "model_path": model_path.strip() or None,
                "backend": backend,
                "n_ctx": parse_number(n_ctx, allow_auto=True),
                "system_prompt": system_prompt.strip() or "default",
            },
            "retrieval": {
                "k": int(k),
                "context_budget": parse_number(budget),
                "mode": mode,
                "chain_type": chain_type,
            },
        }
        try:
            new = svc.save_settings(updates)
        except RagError as exc:
            st.error(friendly(exc))
        else:
            st.session_state[KEY_SETTINGS] = new
            st.session_state[KEY_SAVED] = str(settings_file().resolve())
            st.rerun()
    try:
        _render_doctor(svc.doctor())
    except RagError as exc:
        st.error(friendly(exc))


if __name__ == "__main__":  # run as a page by st.navigation (rag_app/ui/app.py)
    page()
