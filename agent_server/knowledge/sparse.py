"""Sparse term vectors for hybrid search: BM25 term weights from the Qdrant engine's encoder.

A document's vector weighs each term by its saturated frequency and the chunk's length (BM25's
``k`` and ``b``); a query's vector marks its terms with weight 1. The inverse document
frequency, the part that depends on the whole collection, is applied by the store at search
time (Qdrant's IDF modifier), so adding a document never rewrites the others. Terms are
lowercased, ASCII-folded, stemmed and stripped of English stop words; a term's index is its
hash, as Qdrant's own ``bm25`` model does. The encoder ships with ``qdrant-edge-py`` and is
used for both stores, so the vectors are the same whichever store holds them.
"""

from __future__ import annotations

from collections.abc import Sequence

import qdrant_edge as qe

from agent_server.knowledge.vectors.base import SparseVector

CHARS_PER_WORD = 6.5  # English prose with its spaces and punctuation, measured on docs/


class SparseEncoder:
    """BM25 weights for chunks of about ``chunk_chars`` characters (BM25's length
    normalisation compares each chunk with that length)."""

    def __init__(self, chunk_chars: int) -> None:
        average_words = max(1.0, chunk_chars / CHARS_PER_WORD)
        self._bm25 = qe.Bm25(qe.Bm25Config(avg_len=average_words))

    def documents(self, texts: Sequence[str]) -> list[SparseVector]:
        return [_converted(self._bm25.embed_document(text)) for text in texts]

    def query(self, text: str) -> SparseVector:
        return _converted(self._bm25.embed_query(text))


def _converted(vector: qe.SparseVector) -> SparseVector:
    return SparseVector(tuple(vector.indices), tuple(vector.values))
