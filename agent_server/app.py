"""The application: settings in, a Starlette app out. Everything is wired in the lifespan."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from agent_server.api import admin, admin_events, agui, health, openai_compat, rag, threads
from agent_server.api.http import (
    http_error_handler,
    input_error_handler,
    reranker_missing_handler,
    retrieval_error_handler,
    storage_error_handler,
)
from agent_server.auth.middleware import AuthMiddleware
from agent_server.config import ConfigError, Settings
from agent_server.knowledge.errors import RetrievalUnavailable
from agent_server.knowledge.library import RerankerMissing
from agent_server.models import create_chat_model
from agent_server.models.base import ChatModel
from agent_server.observability.logs import REQUEST_ID_HEADER, RequestIdMiddleware
from agent_server.observability.metrics import MetricsMiddleware
from agent_server.services import build_tools, start_services
from agent_server.store.base import StorageUnavailable
from protocol.input import InputError

logger = logging.getLogger("citadel")


def create_app(settings: Settings | None = None, *, model: ChatModel | None = None) -> Starlette:
    """The ASGI app. ``model`` replaces the configured chat backend (benchmarks, embedding)."""
    settings = settings or Settings()
    problems = settings.problems()
    if problems:
        raise ConfigError("; ".join(problems))
    build_tools(settings)  # a configuration error stops us here, before the lifespan

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        chat_model = model or create_chat_model(settings)
        services = await start_services(settings, chat_model)
        app.state.services = services
        if settings.auth == "off":
            logger.warning("authentication is OFF: every request acts as the local user")
        try:
            yield
        finally:
            await services.aclose()

    middleware = []
    if settings.cors_origins:  # outermost: preflights and refusals get CORS headers too
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type", "Last-Event-ID", REQUEST_ID_HEADER],
                # Bearer tokens need no credentials mode; the session cookie does.
                allow_credentials=settings.clerk_accept_cookie and "*" not in settings.cors_origins,
                expose_headers=["Retry-After", "WWW-Authenticate", "Location", REQUEST_ID_HEADER],
            )
        )
    middleware += [
        Middleware(RequestIdMiddleware),  # outside the rest: refusals carry the id too
        Middleware(MetricsMiddleware),
        Middleware(AuthMiddleware),
    ]
    return Starlette(
        routes=[
            *agui.routes,
            *threads.routes,
            *rag.routes,
            *openai_compat.routes,
            *admin.routes,
            *admin_events.routes,
            *health.routes,
        ],
        middleware=middleware,
        exception_handlers={
            InputError: input_error_handler,
            StorageUnavailable: storage_error_handler,
            RetrievalUnavailable: retrieval_error_handler,
            RerankerMissing: reranker_missing_handler,
            HTTPException: http_error_handler,
        },
        lifespan=lifespan,
    )
