"""The one error the knowledge base raises: the runtime turns it into ``retrieval_unavailable``."""

from __future__ import annotations


class RetrievalUnavailable(Exception):
    """The embedder or the vector store cannot serve now; the message says which and why."""

    code = "retrieval_unavailable"
