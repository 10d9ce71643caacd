"""The knowledge base over REST: ingest (as a background job), follow jobs, list and delete
documents, search (optionally answered by the model with citations)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent_server.api.http import actor_of, parse_body, read_json, services_of
from agent_server.auth.principals import principal_of
from agent_server.auth.scopes import allows
from agent_server.knowledge.answer import answer_with_citations
from agent_server.knowledge.ingest import SourceFile, job_json
from agent_server.knowledge.library import KnowledgeBase
from agent_server.knowledge.vectors.base import Hit, SearchFilter
from agent_server.runtime.knowledge_tools import hit_json
from agent_server.services import Services
from protocol.input import InputError, StrictModel

KNOWLEDGE_BASE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_FILES = 1000
MAX_BATCH_QUERIES = 32


class Filters(StrictModel):
    sources: list[str] = Field(default_factory=list, max_length=100)
    tags: list[str] = Field(default_factory=list, max_length=100)
    document_ids: list[str] = Field(default_factory=list, max_length=100)

    def search_filter(self) -> SearchFilter:
        return SearchFilter(tuple(self.sources), tuple(self.document_ids), tuple(self.tags))


class QueryOptions(StrictModel):
    knowledge_base: str | None = None
    top_k: int = Field(5, ge=1, le=50)
    hybrid: bool | None = None  # default: CITADEL_HYBRID_SEARCH
    rerank: bool = False
    score_threshold: float | None = Field(None, ge=-1, le=1)
    filters: Filters = Field(default_factory=Filters)


class QueryRequest(QueryOptions):
    query: str = Field(min_length=1, max_length=4000)
    answer: bool = False


class BatchQueryRequest(QueryOptions):
    queries: list[str] = Field(min_length=1, max_length=MAX_BATCH_QUERIES)


class TextDocument(StrictModel):
    name: str = Field(min_length=1, max_length=500)
    text: str = Field(min_length=1)
    content_type: str | None = None


class IngestRequest(StrictModel):
    knowledge_base: str | None = None
    documents: list[TextDocument] = Field(min_length=1, max_length=MAX_FILES)
    tags: list[str] = Field(default_factory=list, max_length=20)


def _knowledge(services: Services) -> KnowledgeBase:
    if services.knowledge is None:
        raise InputError(404, "knowledge_base_off", "the knowledge base is off (CITADEL_RETRIEVAL)")
    return services.knowledge


def _base_name(request: Request, name: str | None, *, write: bool = False) -> str:
    """The knowledge base a request names (or the default), if the caller may use it so.

    People may search every base and, as administrators, change them; a machine credential
    only what its scopes name (``kb:<name>`` to search, ``kb:<name>:write`` to change)."""
    name = name or services_of(request).settings.knowledge_base
    if not KNOWLEDGE_BASE_NAME.match(name):
        raise InputError(422, "invalid_input", "knowledgeBase: letters, digits, - and _ only")
    principal = principal_of(request)
    need = f"kb:{name}:write" if write else f"kb:{name}"
    if principal.scopes is not None and not allows(principal.scopes, need):
        raise InputError(403, "forbidden", f"this credential lacks the {need} scope")
    if principal.scopes is None and write and not principal.admin:
        raise InputError(403, "forbidden", "changing a knowledge base is for administrators")
    return name


def _may_write_some_base(request: Request) -> None:
    """Refuse a write before reading its upload when no base could be written."""
    principal = principal_of(request)
    if principal.scopes is None:
        if not principal.admin:
            raise InputError(403, "forbidden", "changing a knowledge base is for administrators")
    elif not any(scope.endswith(":write") for scope in principal.scopes):
        raise InputError(403, "forbidden", "this credential may not change a knowledge base")


# Ingestion -----------------------------------------------------------------------------------


async def ingest(request: Request) -> Response:
    """Queue files (multipart ``file`` fields) or texts (JSON) for ingestion; 202 with the
    job to follow at ``GET /rag/jobs/{id}``."""
    services = services_of(request)
    _knowledge(services)
    _may_write_some_base(request)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        name, files, tags = await _uploaded(request, services)
    else:
        body: IngestRequest = parse_body(
            IngestRequest, await read_json(request, services.settings.max_upload_bytes)
        )
        name, tags = body.knowledge_base, body.tags
        files = [
            SourceFile.from_bytes(item.name, item.text.encode(), item.content_type)
            for item in body.documents
        ]
    base = _base_name(request, name, write=True)
    assert services.ingest_jobs is not None
    job = await services.ingest_jobs.submit(base, files, actor_of(request), tags)
    return JSONResponse({"job": job_json(job)}, 202, headers={"Location": f"/rag/jobs/{job.id}"})


async def _uploaded(
    request: Request, services: Services
) -> tuple[str | None, list[SourceFile], list[str]]:
    declared = request.headers.get("content-length")
    limit = services.settings.max_upload_bytes
    if declared is None or not declared.isdigit():
        raise InputError(411, "length_required", "send uploads with a Content-Length")
    if int(declared) > limit:
        raise InputError(413, "payload_too_large", f"the upload exceeds {limit} bytes")
    async with request.form(max_files=MAX_FILES, max_fields=20) as form:
        uploads = [item for item in form.getlist("file") if isinstance(item, UploadFile)]
        if not uploads:
            raise InputError(422, "invalid_input", "file: attach at least one file")
        files = [
            SourceFile.from_bytes(
                upload.filename or "upload", await upload.read(), upload.content_type
            )
            for upload in uploads
        ]
        name = form.get("knowledge_base")
        tags = form.get("tags")
    return (
        name if isinstance(name, str) else None,
        files,
        [tag.strip() for tag in tags.split(",") if tag.strip()] if isinstance(tags, str) else [],
    )


async def get_job(request: Request) -> Response:
    services = services_of(request)
    job = (
        await services.ingest_jobs.get(request.path_params["job_id"])
        if services.ingest_jobs
        else None
    )
    if job is None or job.owner != principal_of(request).user_id:
        raise InputError(
            404, "job_not_found", f"no ingestion job {request.path_params['job_id']!r}"
        )
    return JSONResponse({"job": job_json(job)})


# Documents -----------------------------------------------------------------------------------


async def list_documents(request: Request) -> Response:
    services = services_of(request)
    knowledge = _knowledge(services)
    base = _base_name(request, request.query_params.get("knowledgeBase"))
    records = await knowledge.documents.list_documents(knowledge.collection(base))
    return JSONResponse(
        {
            "documents": [
                {
                    "id": record.document_id,
                    "source": record.source,
                    "title": record.title,
                    "chunks": len(record.chunk_ids),
                    "tags": list(record.tags),
                    "sizeBytes": record.size_bytes,
                    "updatedAt": record.updated_at.isoformat() if record.updated_at else None,
                }
                for record in records
            ]
        }
    )


async def delete_document(request: Request) -> Response:
    services = services_of(request)
    knowledge = _knowledge(services)
    base = _base_name(request, request.query_params.get("knowledgeBase"), write=True)
    document_id = request.path_params["document_id"]
    if not await knowledge.delete(base, document_id, actor_of(request)):
        raise InputError(404, "document_not_found", f"no document {document_id!r} in {base!r}")
    return Response(status_code=204)


# Retrieval -----------------------------------------------------------------------------------


async def query(request: Request) -> Response:
    services, body, [hits] = await _search(request, QueryRequest)
    result: dict[str, Any] = {"query": body.query, "hits": _hits(hits)}
    if body.answer:
        answered = await answer_with_citations(services.model, body.query, hits)
        result |= {"answer": answered.text, "citations": answered.citations}
    return JSONResponse(result)


async def batch_query(request: Request) -> Response:
    _, body, found = await _search(request, BatchQueryRequest)
    return JSONResponse(
        {
            "results": [
                {"query": text, "hits": _hits(hits)}
                for text, hits in zip(body.queries, found, strict=True)
            ]
        }
    )


async def _search(
    request: Request, model: type[QueryRequest] | type[BatchQueryRequest]
) -> tuple[Services, Any, list[list[Hit]]]:
    """The request's body and the hits of each of its queries."""
    services = services_of(request)
    knowledge = _knowledge(services)
    body = parse_body(model, await read_json(request, services.settings.max_body_bytes))
    found = await knowledge.search_many(
        _base_name(request, body.knowledge_base),
        body.queries if isinstance(body, BatchQueryRequest) else [body.query],
        top_k=body.top_k,
        score_threshold=body.score_threshold,
        filter=body.filters.search_filter(),
        hybrid=body.hybrid,
        rerank=body.rerank,
    )
    return services, body, found


def _hits(hits: list[Hit]) -> list[dict[str, Any]]:
    return [hit_json(hit) for hit in hits]


routes = [
    Route("/rag/ingest", ingest, methods=["POST"]),
    Route("/rag/jobs/{job_id}", get_job, methods=["GET"]),
    Route("/rag/documents", list_documents, methods=["GET"]),
    Route("/rag/documents/{document_id}", delete_document, methods=["DELETE"]),
    Route("/rag/query", query, methods=["POST"]),
    Route("/rag/batch-query", batch_query, methods=["POST"]),
]
