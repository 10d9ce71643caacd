"""``read_document``: pick the reader by file extension (else by content type) and run it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePath

from agent_server.knowledge.documents.decoding import charset_of, decode
from agent_server.knowledge.documents.errors import DocumentError
from agent_server.knowledge.documents.html import read_html
from agent_server.knowledge.documents.markdown import read_markdown
from agent_server.knowledge.documents.model import (
    Document,
    Extracted,
    Section,
    content_hash,
    document_id,
)
from agent_server.knowledge.documents.pdf import read_pdf

DEFAULT_MAX_BYTES = 32 * 1024 * 1024

MARKDOWN = "text/markdown"
HTML = "text/html"
PDF = "application/pdf"
TEXT = "text/plain"

EXTENSIONS = {
    ".txt": TEXT,
    ".text": TEXT,
    ".md": MARKDOWN,
    ".markdown": MARKDOWN,
    ".html": HTML,
    ".htm": HTML,
    ".pdf": PDF,
}
CONTENT_TYPES = {
    TEXT: TEXT,
    MARKDOWN: MARKDOWN,
    "text/x-markdown": MARKDOWN,
    HTML: HTML,
    "application/xhtml+xml": HTML,
    PDF: PDF,
    "application/x-pdf": PDF,
}


def read_document(
    name: str,
    data: bytes,
    knowledge_base: str,
    content_type: str | None = None,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Document:
    """Read one file into a :class:`Document`, or raise :class:`DocumentError`.

    ``name`` is the source as given (a path or an upload's file name): with the knowledge base
    it fixes the document id. A known extension decides the reader, because browsers send
    ``application/octet-stream`` or ``text/plain`` for Markdown; ``content_type`` decides
    for other names (``blob``, ``README``, ``notes.v2``). Its ``charset`` parameter is honoured.
    """
    if len(data) > max_bytes:
        raise DocumentError(
            "too_large", f"{name} is {len(data)} bytes; the limit is {max_bytes} bytes"
        )
    media_type = media_type_of(name, content_type)
    extracted = _read(media_type, data, charset_of(content_type))
    sections = tuple(section for section in extracted.sections if section.text.strip())
    if not sections:
        raise DocumentError("empty", f"{name} has no text to index" + _empty_hint(media_type))
    return Document(
        id=document_id(knowledge_base, name),
        knowledge_base=knowledge_base,
        source=name,
        title=extracted.title or PurePath(name.replace("\\", "/")).stem or name,
        content_hash=content_hash(data),
        size_bytes=len(data),
        media_type=media_type,
        sections=sections,
    )


def media_type_of(name: str, content_type: str | None = None) -> str:
    """The reader's media type for ``name``/``content_type``, or ``unsupported_type``."""
    suffix = PurePath(name.replace("\\", "/")).suffix.lower()
    if suffix in EXTENSIONS:
        return EXTENSIONS[suffix]
    declared = (content_type or "").split(";")[0].strip().lower()
    if declared in CONTENT_TYPES:
        return CONTENT_TYPES[declared]
    kind = f"{suffix} files" if suffix else f"content type {declared or 'unknown'}"
    supported = ", ".join(sorted(EXTENSIONS))
    raise DocumentError("unsupported_type", f"{kind} cannot be read; supported: {supported}")


def _read(media_type: str, data: bytes, charset: str | None) -> Extracted:
    if media_type == PDF:
        return read_pdf(data)
    readers: dict[str, Callable[[str], Extracted]] = {
        MARKDOWN: read_markdown,
        HTML: read_html,
        TEXT: _read_text,
    }
    return readers[media_type](decode(data, charset=charset, html=media_type == HTML))


def _read_text(text: str) -> Extracted:
    return Extracted(None, (Section((), text.strip("\n")),))


def _empty_hint(media_type: str) -> str:
    return " (a scanned PDF needs OCR first)" if media_type == PDF else ""
