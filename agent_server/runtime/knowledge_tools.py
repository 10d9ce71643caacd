"""The knowledge base as backend tools: the model searches it and, with a person's approval,
adds to it. Both run as ordinary tool calls, so the chat panel shows them as AG-UI tool-call
events, and search hits arrive in ``TOOL_CALL_RESULT`` ready to render as citations.

A knowledge base that cannot serve (embedder or vector store down) is a tool failure the
model reads (``retrieval_unavailable``), so the run degrades to an answer without sources
instead of failing.
"""

from __future__ import annotations

import hashlib
from typing import Any

from agent_server.knowledge.documents import DocumentError
from agent_server.knowledge.errors import RetrievalUnavailable
from agent_server.knowledge.library import KnowledgeBase
from agent_server.knowledge.vectors.base import Hit, SearchFilter
from agent_server.runtime.tools import BackendTool, ToolContext, ToolFailure
from agent_server.store.base import Actor

SEARCH_TOOL = "search_knowledge_base"
ADD_TOOL = "add_to_knowledge_base"
KNOWLEDGE_TOOL_NAMES = (SEARCH_TOOL, ADD_TOOL)
SNIPPET_CHARS = 600
MAX_TOP_K = 20

CITATION_PROMPT = (
    f"To answer from the knowledge base, call {SEARCH_TOOL}. Answer from its hits only, and "
    "cite each source you use in square brackets, e.g. [docs/configuration.md]. If the hits "
    "do not answer the question, say so."
)

_STRINGS = {"type": "array", "items": {"type": "string", "maxLength": 500}, "maxItems": 20}

SEARCH_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "query": {"type": "string", "minLength": 1, "maxLength": 1000},
        "top_k": {"type": "integer", "minimum": 1, "maximum": MAX_TOP_K},
        "filters": {
            "type": "object",
            "properties": {"sources": _STRINGS, "tags": _STRINGS, "document_ids": _STRINGS},
            "additionalProperties": False,
        },
    },
    "required": ["query"],
}

ADD_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "text": {"type": "string", "minLength": 1, "maxLength": 100_000},
        "title": {"type": "string", "maxLength": 200},
    },
    "required": ["text"],
}


def knowledge_tools(
    knowledge: KnowledgeBase, knowledge_base: str, *, with_add: bool = True
) -> tuple[BackendTool, ...]:
    """``search_knowledge_base`` and, ``with_add``, ``add_to_knowledge_base`` (which needs
    approval) over ``knowledge_base``."""

    async def search(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        filters = arguments.get("filters") or {}
        try:
            hits = await knowledge.search(
                knowledge_base,
                arguments["query"],
                top_k=arguments.get("top_k", 5),
                filter=SearchFilter(
                    sources=tuple(filters.get("sources", ())),
                    document_ids=tuple(filters.get("document_ids", ())),
                    tags=tuple(filters.get("tags", ())),
                ),
            )
        except RetrievalUnavailable as error:
            raise ToolFailure(f"{error.code}: {error}") from None
        found = [hit_json(hit) for hit in hits]
        if isinstance(context.state, dict):
            # The panel can list the sources without parsing tool results.
            context.state["sources"] = [
                {key: item[key] for key in ("source", "title", "score")} for item in found
            ]
        return {"query": arguments["query"], "hits": found}

    async def add(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        text: str = arguments["text"]
        title = arguments.get("title") or text.strip().splitlines()[0][:80]
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        name = f"chat/{context.thread_id}/{digest}.md"
        try:
            added = await knowledge.ingest(
                knowledge_base,
                name,
                f"# {title}\n\n{text}".encode(),
                Actor(context.owner),
                tags=("chat",),
            )
        except DocumentError as error:
            raise ToolFailure(error.message) from None
        except RetrievalUnavailable as error:
            raise ToolFailure(f"{error.code}: {error}") from None
        return {"document_id": added.document_id, "source": name, "chunks": added.chunks}

    search_tool = BackendTool(
        SEARCH_TOOL,
        "Search the knowledge base (documentation and notes) for passages that answer a "
        "question. Returns the best passages with their source, title and score.",
        SEARCH_PARAMETERS,
        search,
    )
    if not with_add:
        return (search_tool,)
    return (
        search_tool,
        BackendTool(
            ADD_TOOL,
            "Save text the user gives into the knowledge base so it can be found later. "
            "Needs the user's approval.",
            ADD_PARAMETERS,
            add,
            requires_approval=True,
            timeout=120.0,
        ),
    )


def hit_json(hit: Hit) -> dict[str, Any]:
    """A hit as tools and the REST API show it: where it is from, a snippet, its score."""
    payload = hit.payload
    text: str = payload.get("text", "")
    snippet = text if len(text) <= SNIPPET_CHARS else text[:SNIPPET_CHARS].rsplit(" ", 1)[0] + " …"
    found = {
        "source": payload.get("source", ""),
        "title": payload.get("title", ""),
        "snippet": snippet,
        "score": round(hit.score, 4),
        "document_id": payload.get("document_id", ""),
    }
    if payload.get("headings"):
        found["headings"] = payload["headings"]
    if payload.get("page") is not None:
        found["page"] = payload["page"]
    return found
