"""CORS for the origins in force now: a configuration reload may change
``CITADEL_CORS_ORIGINS``, so the origins are read from the app's settings for each request,
and Starlette's middleware is built again when they differ from the last request's."""

from __future__ import annotations

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from agent_server.config import Settings
from agent_server.observability.logs import REQUEST_ID_HEADER


class ReloadableCORS:
    """Exact origins only; none configured (or the app not started yet): no CORS headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._built_for: tuple[tuple[str, ...], bool] = ((), False)
        self._handler: ASGIApp = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        services = getattr(scope["app"].state, "services", None)
        handler = self.app if services is None else self._handler_for(services.settings)
        await handler(scope, receive, send)

    def _handler_for(self, settings: Settings) -> ASGIApp:
        origins = tuple(settings.cors_origins)
        # Bearer tokens need no credentials mode; the session cookie does.
        credentials = settings.clerk_accept_cookie and "*" not in origins
        if (origins, credentials) != self._built_for:
            self._built_for = (origins, credentials)
            self._handler = self.app
            if origins:
                self._handler = CORSMiddleware(
                    self.app,
                    allow_origins=origins,
                    allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
                    allow_headers=[
                        "Authorization",
                        "Content-Type",
                        "Last-Event-ID",
                        REQUEST_ID_HEADER,
                    ],
                    allow_credentials=credentials,
                    expose_headers=[
                        "Retry-After",
                        "WWW-Authenticate",
                        "Location",
                        REQUEST_ID_HEADER,
                    ],
                )
        return self._handler
