"""PDF to one section per page with pypdf; headings come from the outline (bookmarks).

A PDF has no reliable paragraph or heading markup, so the page is the section: chunks then
carry a true page number. A page's heading path is the deepest outline entry that starts on
or before it. PDFs encrypted with a non-empty user password are refused (``encrypted``); those
with only an owner password (print/copy restrictions) open with the empty password and are read.
Image-only (scanned) pages have no text; OCR is out of scope.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from typing import Any

from pypdf import PdfReader
from pypdf.errors import DependencyError, FileNotDecryptedError, LimitReachedError, PyPdfError

from agent_server.knowledge.documents.errors import DocumentError
from agent_server.knowledge.documents.model import Extracted, Section

_BLANK_RUNS = re.compile(r"\n[ \t]*(?:\n[ \t]*)+\n")
logging.getLogger("pypdf").setLevel(logging.ERROR)  # it warns about every repaired file


def read_pdf(data: bytes) -> Extracted:
    """Text per page (1-based ``page``), the metadata title if the PDF has one."""
    try:
        reader = PdfReader(io.BytesIO(data))
        _unlock(reader)
        outline = _outline_starts(reader)
        sections: list[Section] = []
        path: tuple[str, ...] = ()
        for number, page in enumerate(reader.pages, start=1):
            path = outline.get(number, path)
            text = _clean(page.extract_text() or "")
            if text:
                sections.append(Section(path, text, page=number))
        metadata = reader.metadata
        title = " ".join((metadata.title or "").split()) if metadata else ""
    except DocumentError:
        raise
    except (FileNotDecryptedError, DependencyError) as error:
        raise DocumentError("encrypted", f"the PDF is encrypted: {error}") from None
    except LimitReachedError as error:  # a stream that inflates past pypdf's safety limits
        raise DocumentError("too_large", f"the PDF expands too much: {error}") from None
    except Exception as error:  # a parser fed untrusted bytes fails in many ways; all mean this
        raise DocumentError("corrupt", f"the PDF cannot be read: {error}") from None
    return Extracted(title or None, tuple(sections))


def _unlock(reader: PdfReader) -> None:
    if not reader.is_encrypted:
        return
    try:
        unlocked = reader.decrypt("")
    except DependencyError as error:  # AES without the optional cryptography package
        raise DocumentError("encrypted", f"the PDF is encrypted ({error})") from None
    if not unlocked:
        raise DocumentError("encrypted", "the PDF is password-protected; upload it unlocked")


def _outline_starts(reader: PdfReader) -> dict[int, tuple[str, ...]]:
    """Page number → heading path of the last outline entry starting on that page."""
    starts: dict[int, tuple[str, ...]] = {}
    try:
        for path, destination in _walk(reader, reader.outline, ()):
            page = reader.get_destination_page_number(destination)
            if page is not None and page >= 0:
                starts[page + 1] = path
    except (PyPdfError, ValueError, TypeError, KeyError, AttributeError, IndexError):
        return {}  # a broken outline costs the headings, not the text
    return starts


def _walk(
    reader: PdfReader, items: list[Any], parent: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], Any]]:
    path = parent
    for item in items:
        if isinstance(item, list):  # the children of the entry before it
            yield from _walk(reader, item, path)
        else:
            path = (*parent, " ".join(str(item.title or "").split()))
            yield path, item


def _clean(text: str) -> str:
    lines = (line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip()
