"""What a read document is: its identity, a title, and its text as sections under headings.

Sections are the unit the chunker never crosses: a chunk belongs to one heading path on one
page, so its metadata can say where it came from without approximation.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
import uuid
from dataclasses import dataclass

# Fixed forever: changing it changes every document and chunk id already stored.
NAMESPACE = uuid.UUID("6f1c2b0e-4d1a-5b7e-9c3f-0a8e5d2c7b41")


@dataclass(frozen=True, slots=True)
class Section:
    """Text under one heading path (outermost first) on one page (PDF only, 1-based)."""

    headings: tuple[str, ...]
    text: str
    page: int | None = None


@dataclass(frozen=True, slots=True)
class Document:
    """A file as the knowledge base sees it; ``id`` depends only on where it comes from.

    ``content_hash`` (sha256 of the raw bytes) tells the caller whether a re-ingested file
    changed at all; ``media_type`` names the reader that produced the sections. Sections are
    never empty and keep document order.
    """

    id: str
    knowledge_base: str
    source: str
    title: str
    content_hash: str
    size_bytes: int
    media_type: str
    sections: tuple[Section, ...]

    @property
    def text(self) -> str:
        """All section texts, blank-line separated (for display and tests, not chunking)."""
        return "\n\n".join(section.text for section in self.sections)


def document_id(knowledge_base: str, source: str) -> str:
    """UUID5 of (knowledge base, source): the same file in the same base keeps its id.

    The source is NFC-normalised so a name typed on Linux and one listed by macOS (NFD) agree.
    """
    key = json.dumps([knowledge_base, unicodedata.normalize("NFC", source)], ensure_ascii=False)
    return str(uuid.uuid5(NAMESPACE, key))


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class Extracted:
    """What a reader found: the document's own title (if it names one) and its sections."""

    title: str | None
    sections: tuple[Section, ...]
