"""Reading documents (text, Markdown, HTML, PDF) and chunking them for the knowledge base.

Pure and synchronous: bytes in, :class:`Document` and :class:`Chunk` values out. Embedding
and storage are the caller's; :mod:`.chunking` says how chunk ids make re-ingestion cheap.
"""

from agent_server.knowledge.documents.chunking import (
    CONTEXT_LIMIT,
    DEFAULT_OVERLAP,
    DEFAULT_SIZE,
    Chunk,
    chunk,
    split,
)
from agent_server.knowledge.documents.errors import DocumentError, ErrorCode
from agent_server.knowledge.documents.model import Document, Section, document_id
from agent_server.knowledge.documents.read import DEFAULT_MAX_BYTES, media_type_of, read_document

__all__ = [
    "CONTEXT_LIMIT",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_OVERLAP",
    "DEFAULT_SIZE",
    "Chunk",
    "Document",
    "DocumentError",
    "ErrorCode",
    "Section",
    "chunk",
    "document_id",
    "media_type_of",
    "read_document",
    "split",
]
