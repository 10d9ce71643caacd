"""One answer from retrieved passages, with the sources it cites: ``POST /rag/query`` with
``"answer": true``. The passages are numbered in the prompt; the answer cites them as [n], and
the citations returned are the passages it actually cited (all of them if it cited none)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from agent_server.knowledge.vectors.base import Hit
from agent_server.models.base import ChatMessage, ChatModel, ChatRequest, TextDelta

MAX_PASSAGE_CHARS = 1200
_CITATION = re.compile(r"\[(\d{1,2})\]")

INSTRUCTIONS = (
    "Answer the question from the numbered passages only. Cite the passages you use as [1], "
    "[2]. If the passages do not answer the question, say that you do not know."
)


@dataclass(frozen=True, slots=True)
class Answered:
    text: str
    citations: list[dict[str, Any]]


async def answer_with_citations(
    model: ChatModel, question: str, hits: list[Hit], max_tokens: int = 512
) -> Answered:
    if not hits:
        return Answered("The knowledge base has nothing on this question.", [])
    passages = "\n\n".join(
        f"[{number}] {hit.payload.get('title', '')} ({hit.payload.get('source', '')})\n"
        f"{hit.payload.get('text', '')[:MAX_PASSAGE_CHARS]}"
        for number, hit in enumerate(hits, 1)
    )
    request = ChatRequest(
        [
            ChatMessage("system", INSTRUCTIONS),
            ChatMessage("user", f"Passages:\n\n{passages}\n\nQuestion: {question}"),
        ],
        max_tokens=max_tokens,
        temperature=0,
    )
    parts = [delta.text async for delta in model.stream(request) if isinstance(delta, TextDelta)]
    text = "".join(parts).strip()
    cited = sorted({int(n) for n in _CITATION.findall(text) if 1 <= int(n) <= len(hits)})
    chosen = cited or list(range(1, len(hits) + 1))
    return Answered(
        text,
        [
            {
                "number": number,
                "source": hits[number - 1].payload.get("source", ""),
                "title": hits[number - 1].payload.get("title", ""),
                "documentId": hits[number - 1].payload.get("document_id", ""),
            }
            for number in chosen
        ],
    )
