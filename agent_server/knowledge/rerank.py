"""Reranking through a configured endpoint (Cohere/Jina/TEI style ``POST {base}/rerank``):
``{"model", "query", "documents", "top_n"}`` in, ``{"results": [{"index",
"relevance_score"}]}`` out. No reranker runs in process: none installs offline (models.md §5).
"""

from __future__ import annotations

from typing import Any

from agent_server.backends.errors import BackendError
from agent_server.backends.resilience import ResilientHTTP
from agent_server.knowledge.errors import RetrievalUnavailable


class Reranker:
    def __init__(self, base_url: str, model: str | None, http: ResilientHTTP) -> None:
        self.url = base_url.rstrip("/") + "/rerank"
        self.model = model
        self._http = http

    async def forward(self, body: dict[str, Any]) -> Any:
        """The endpoint's answer to ``body`` (the configured model unless it names one)."""
        if self.model and "model" not in body:
            body = {**body, "model": self.model}
        try:
            return await self._http.post_json(self.url, body)
        except BackendError as error:
            reason = str(error)  # create_reranker's client names itself "reranker at <url>"
            prefix = "" if reason.startswith("reranker") else "reranker "
            raise RetrievalUnavailable(prefix + reason) from None

    async def rerank(self, query: str, documents: list[str], top_n: int) -> list[tuple[int, float]]:
        """(index into ``documents``, relevance) of the best ``top_n``, best first."""
        answer = await self.forward({"query": query, "documents": documents, "top_n": top_n})
        try:
            ranked = [(int(r["index"]), float(r["relevance_score"])) for r in answer["results"]]
        except (KeyError, TypeError, ValueError) as error:
            raise RetrievalUnavailable(f"reranker: unexpected answer ({error!r})") from None
        ranked = [(index, score) for index, score in ranked if 0 <= index < len(documents)]
        return sorted(ranked, key=lambda item: -item[1])[:top_n]

    async def check(self) -> None:
        """One tiny ranking: raises :class:`RetrievalUnavailable` unless the endpoint ranks."""
        await self.rerank("check", ["check"], 1)

    async def aclose(self) -> None:
        await self._http.aclose()
