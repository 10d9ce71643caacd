"""The application: settings in, a FastAPI app out. Everything is wired in the lifespan."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.staticfiles import StaticFiles

from agent_server import __version__
from agent_server.api import (
    admin,
    admin_config,
    admin_events,
    admin_logs,
    agui,
    chat_completions,
    copilotkit,
    health,
    openai_compat,
    openapi,
    rag,
    threads,
    voice,
    webapp,
)
from agent_server.api.cors import ReloadableCORS
from agent_server.api.errors import HANDLERS
from agent_server.api.guard import Gate, declared_policies
from agent_server.api.middleware import MetricsMiddleware, RequestIdMiddleware
from agent_server.api.openapi import DOCS_ASSETS, assets_directory
from agent_server.config import ConfigError, Settings, read_settings
from agent_server.models import create_chat_model
from agent_server.models.base import ChatModel
from agent_server.observability.log_buffer import capture_logs
from agent_server.reload.control import Reloads
from agent_server.services import check_agents, start_services

logger = logging.getLogger("citadel")

# Every face: a router of its own, registered here once.
ROUTERS = (
    agui.router,
    copilotkit.router,
    threads.router,
    rag.router,
    openai_compat.router,
    chat_completions.router,
    admin.router,
    admin_config.router,
    admin_events.router,
    admin_logs.router,
    health.router,
    voice.router,
    webapp.router,
    openapi.router,
)

DESCRIPTION = """One conversational agent runtime behind AG-UI (HTTP+SSE and WebSocket), REST
and OpenAI-compatible faces. Every error is `{"error": {"code", "message"}}` with a stable
`code`; streams that fail after their first byte end with `RUN_ERROR` and a `code`."""


def create_app(
    settings: Settings | None = None,
    *,
    model: ChatModel | None = None,
    load: Callable[[], Settings] = read_settings,
    sighup: bool = False,
) -> FastAPI:
    """The ASGI app. ``model`` replaces the configured chat backend (benchmarks, embedding).
    ``load`` reads the settings again for a configuration reload (and first, without
    ``settings``); ``sighup``: SIGHUP reloads too (one app per process: ``citadel serve``)."""
    settings = settings or load()
    problems = settings.problems()
    if problems:
        raise ConfigError(*problems)
    check_agents(settings)  # a configuration error stops us here, before the lifespan
    web = webapp.built_app(settings.web_dir)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with capture_logs(settings) as logs:  # start-up and shut-down lines included
            app.state.logs = logs
            chat_model = model or create_chat_model(settings)
            services = await start_services(settings, chat_model)
            app.state.services = services
            reloads = app.state.reloads = Reloads(services, load)
            if settings.auth == "off":
                logger.warning("authentication is OFF: every request acts as the local user")
            if web is None:
                logger.info("the web app is not built (`make run` builds web-demo/)")
            else:
                logger.info("web app: http://%s:%s/", settings.host, settings.port)
            try:
                reloads.start(sighup=sighup)
                yield
            finally:
                await reloads.stop()
                try:
                    await services.aclose()
                finally:
                    await reloads.aclose()

    policies = declared_policies(ROUTERS)
    app = FastAPI(
        title="Citadel",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        middleware=[
            Middleware(ReloadableCORS),  # outermost: preflights and refusals get CORS headers too
            Middleware(RequestIdMiddleware),  # outside the rest: refusals carry the id too
            Middleware(MetricsMiddleware),
            Middleware(Gate, policies=policies),
        ],
        exception_handlers=HANDLERS,  # type: ignore[arg-type]
        openapi_url=None,  # served below, with the models read by hand
        docs_url=None,  # served below, from an installed package: no CDN
        redoc_url=None,
    )
    for router in ROUTERS:
        app.include_router(router)
    app.mount(DOCS_ASSETS, StaticFiles(directory=assets_directory()), name="docs-assets")
    if web is not None:
        # What no route matches: API paths keep their 405s, unknown ones their JSON 404.
        app.router.default = web
    return app
