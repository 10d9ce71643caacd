"""The knowledge base over REST: ingest (as a background job), follow jobs, list and delete
documents, search (optionally answered by the model with citations)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import Field, ValidationError
from starlette.datastructures import UploadFile
from starlette.responses import JSONResponse, Response

from agent_server.api.deps import ServicesDep, actor, read_json
from agent_server.api.errors import refusals
from agent_server.api.guard import INGEST, KNOWLEDGE
from agent_server.api.models import RestBody, RestModel
from agent_server.api.openapi import json_body
from agent_server.auth.principals import Principal
from agent_server.knowledge.answer import answer_with_citations
from agent_server.knowledge.ingest import SourceFile, job_json
from agent_server.knowledge.library import KnowledgeBase
from agent_server.knowledge.vectors.base import Hit, SearchFilter
from agent_server.runtime.knowledge_tools import hit_json
from agent_server.scopes import allows
from agent_server.services import Services
from protocol.errors import Refusal

router = APIRouter(tags=["Knowledge base"])
Reader = Annotated[Principal, Depends(KNOWLEDGE)]

BASE_NAME = r"^[A-Za-z0-9_-]{1,64}$"
_BASE_NAME = re.compile(BASE_NAME)
BaseName = Annotated[str | None, Query(alias="knowledgeBase", pattern=BASE_NAME)]
MAX_FILES = 1000
MAX_BATCH_QUERIES = 32
Text = Annotated[str, Field(max_length=1000)]


class Filters(RestBody):
    sources: list[Text] = Field(default_factory=list, max_length=100)
    tags: list[Text] = Field(default_factory=list, max_length=100)
    document_ids: list[Text] = Field(default_factory=list, max_length=100)

    def search_filter(self) -> SearchFilter:
        return SearchFilter(tuple(self.sources), tuple(self.document_ids), tuple(self.tags))


class QueryOptions(RestBody):
    knowledge_base: str | None = Field(None, pattern=BASE_NAME)
    top_k: int = Field(5, ge=1, le=50)
    hybrid: bool | None = Field(None, description="Default: CITADEL_HYBRID_SEARCH")
    rerank: bool = False
    score_threshold: float | None = Field(None, ge=-1, le=1)
    filters: Filters = Field(default_factory=Filters)


class QueryRequest(QueryOptions):
    query: str = Field(min_length=1, max_length=4000)
    answer: bool = False


class BatchQueryRequest(QueryOptions):
    queries: list[Annotated[str, Field(min_length=1, max_length=4000)]] = Field(
        min_length=1, max_length=MAX_BATCH_QUERIES
    )


class TextDocument(RestBody):
    name: str = Field(min_length=1, max_length=500)
    text: str = Field(min_length=1)
    content_type: str | None = Field(None, max_length=200)


class IngestRequest(RestBody):
    knowledge_base: str | None = Field(None, pattern=BASE_NAME)
    documents: list[TextDocument] = Field(min_length=1, max_length=MAX_FILES)
    tags: list[Annotated[str, Field(max_length=100)]] = Field(default_factory=list, max_length=20)


class Answered(RestModel):
    query: str
    hits: list[dict[str, Any]]
    answer: str | None = None
    citations: list[dict[str, Any]] | None = None


class QueryResult(RestModel):
    query: str
    hits: list[dict[str, Any]]


class BatchAnswer(RestModel):
    results: list[QueryResult]


class Document(RestModel):
    id: str
    source: str
    title: str
    chunks: int
    tags: list[str]
    size_bytes: int | None
    updated_at: datetime | None


class Documents(RestModel):
    documents: list[Document]


class JobAnswer(RestModel):
    job: dict[str, Any]


def _knowledge(services: Services) -> KnowledgeBase:
    if services.knowledge is None:
        raise Refusal("knowledge_base_off", "the knowledge base is off (CITADEL_RETRIEVAL)")
    return services.knowledge


def _base_name(
    services: Services, principal: Principal, name: str | None, *, write: bool = False
) -> str:
    """The knowledge base a request names (or the default), if the caller may use it so.

    People may search every base and, as administrators, change them; a machine credential
    only what its scopes name (``kb:<name>`` to search, ``kb:<name>:write`` to change)."""
    name = name or services.settings.knowledge_base
    need = f"kb:{name}:write" if write else f"kb:{name}"
    if principal.scopes is not None and not allows(principal.scopes, need):
        raise Refusal("forbidden", f"this credential lacks the {need} scope")
    if principal.scopes is None and write and not principal.admin:
        raise Refusal("forbidden", "changing a knowledge base is for administrators")
    return name


def _may_write_some_base(principal: Principal) -> None:
    """Refuse a write before reading its upload when no base could be written."""
    if principal.scopes is None:
        if not principal.admin:
            raise Refusal("forbidden", "changing a knowledge base is for administrators")
    elif not any(scope.endswith(":write") for scope in principal.scopes):
        raise Refusal("forbidden", "this credential may not change a knowledge base")


# Ingestion -----------------------------------------------------------------------------------

_UPLOAD_SCHEMA = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {"type": "array", "items": {"type": "string", "format": "binary"}},
        "knowledge_base": {"type": "string", "pattern": BASE_NAME},
        "tags": {"type": "string", "description": "Comma-separated"},
    },
}
_INGEST_BODY = json_body(IngestRequest)
_INGEST_BODY["requestBody"]["content"]["multipart/form-data"] = {"schema": _UPLOAD_SCHEMA}


@router.post(
    "/rag/ingest",
    status_code=202,
    responses=refusals(
        "invalid_json",
        "invalid_form",
        "invalid_input",
        "unsupported_media_type",
        "forbidden",
        "knowledge_base_off",
        "storage_unavailable",
    ),
    openapi_extra=_INGEST_BODY,
)
async def ingest(
    request: Request, services: ServicesDep, principal: Annotated[Principal, Depends(INGEST)]
) -> JSONResponse:
    """Queue files (multipart `file` fields) or texts (JSON) for ingestion; 202 with the
    job to follow at `GET /rag/jobs/{id}`."""
    _knowledge(services)
    _may_write_some_base(principal)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        name, files, tags = await _uploaded(request)
    else:
        body = _validated(IngestRequest, await read_json(request))
        name, tags = body.knowledge_base, body.tags
        files = [
            SourceFile.from_bytes(item.name, item.text.encode(), item.content_type)
            for item in body.documents
        ]
    base = _base_name(services, principal, name, write=True)
    assert services.ingest_jobs is not None
    job = await services.ingest_jobs.submit(base, files, actor(request, principal), tags)
    return JSONResponse({"job": job_json(job)}, 202, headers={"Location": f"/rag/jobs/{job.id}"})


def _validated(model: type[RestBody], data: Any) -> Any:
    """``data`` as ``model``, refused as FastAPI refuses the bodies it reads itself."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        problems = [
            {**problem, "loc": ("body", *problem["loc"])}
            for problem in error.errors(include_url=False)
        ]
        raise RequestValidationError(problems) from None


async def _uploaded(request: Request) -> tuple[str | None, list[SourceFile], list[str]]:
    async with request.form(max_files=MAX_FILES, max_fields=20) as form:
        uploads = [item for item in form.getlist("file") if isinstance(item, UploadFile)]
        if not uploads:
            raise Refusal("invalid_input", "file: attach at least one file")
        files = [
            SourceFile.from_bytes(
                upload.filename or "upload", await upload.read(), upload.content_type
            )
            for upload in uploads
        ]
        name = form.get("knowledge_base")
        tags = form.get("tags")
    if isinstance(name, str) and _BASE_NAME.fullmatch(name) is None:
        raise Refusal("invalid_input", "knowledge_base: letters, digits, - and _ only")
    return (
        name if isinstance(name, str) else None,
        files,
        [tag.strip() for tag in tags.split(",") if tag.strip()] if isinstance(tags, str) else [],
    )


@router.get("/rag/jobs/{job_id}", responses=refusals("job_not_found"))
async def get_job(
    job_id: Annotated[str, Path(max_length=200)], services: ServicesDep, principal: Reader
) -> JobAnswer:
    """An ingestion job's progress and its per-file errors."""
    job = await services.ingest_jobs.get(job_id) if services.ingest_jobs else None
    if job is None or job.owner != principal.user_id:
        raise Refusal("job_not_found", f"no ingestion job {job_id!r}")
    return JobAnswer(job=job_json(job))


# Documents -----------------------------------------------------------------------------------


@router.get(
    "/rag/documents", responses=refusals("knowledge_base_off", "forbidden", "invalid_input")
)
async def list_documents(
    services: ServicesDep, principal: Reader, knowledge_base: BaseName = None
) -> Documents:
    """The knowledge base's documents (default: `CITADEL_KNOWLEDGE_BASE`)."""
    knowledge = _knowledge(services)
    base = _base_name(services, principal, knowledge_base)
    records = await knowledge.documents.list_documents(knowledge.collection(base))
    return Documents(
        documents=[
            Document(
                id=record.document_id,
                source=record.source,
                title=record.title,
                chunks=len(record.chunk_ids),
                tags=list(record.tags),
                size_bytes=record.size_bytes,
                updated_at=record.updated_at,
            )
            for record in records
        ]
    )


@router.delete(
    "/rag/documents/{document_id}",
    status_code=204,
    response_class=Response,
    responses=refusals("knowledge_base_off", "forbidden", "document_not_found", "invalid_input"),
)
async def delete_document(
    document_id: Annotated[str, Path(max_length=500)],
    request: Request,
    services: ServicesDep,
    principal: Reader,
    knowledge_base: BaseName = None,
) -> Response:
    """Delete a document with its chunks (administrators, or `kb:<name>:write`)."""
    knowledge = _knowledge(services)
    base = _base_name(services, principal, knowledge_base, write=True)
    if not await knowledge.delete(base, document_id, actor(request, principal)):
        raise Refusal("document_not_found", f"no document {document_id!r} in {base!r}")
    return Response(status_code=204)


# Retrieval -----------------------------------------------------------------------------------

_SEARCH_REFUSALS = refusals(
    "invalid_input", "knowledge_base_off", "forbidden", "retrieval_unavailable", "not_implemented"
)


@router.post("/rag/query", response_model_exclude_none=True, responses=_SEARCH_REFUSALS)
async def query(body: QueryRequest, services: ServicesDep, principal: Reader) -> Answered:
    """The best chunks for a query; `"answer": true` also answers it with citations."""
    [hits] = await _search(services, principal, body, [body.query])
    found = _hits(hits)
    if not body.answer:
        return Answered(query=body.query, hits=found)
    answered = await answer_with_citations(services.model, body.query, hits)
    return Answered(
        query=body.query, hits=found, answer=answered.text, citations=answered.citations
    )


@router.post("/rag/batch-query", responses=_SEARCH_REFUSALS)
async def batch_query(
    body: BatchQueryRequest, services: ServicesDep, principal: Reader
) -> BatchAnswer:
    """The best chunks for each of up to 32 queries."""
    found = await _search(services, principal, body, body.queries)
    return BatchAnswer(
        results=[
            QueryResult(query=text, hits=_hits(hits))
            for text, hits in zip(body.queries, found, strict=True)
        ]
    )


async def _search(
    services: Services, principal: Principal, body: QueryOptions, queries: list[str]
) -> list[list[Hit]]:
    return await _knowledge(services).search_many(
        _base_name(services, principal, body.knowledge_base),
        queries,
        top_k=body.top_k,
        score_threshold=body.score_threshold,
        filter=body.filters.search_filter(),
        hybrid=body.hybrid,
        rerank=body.rerank,
    )


def _hits(hits: list[Hit]) -> list[dict[str, Any]]:
    return [hit_json(hit) for hit in hits]
