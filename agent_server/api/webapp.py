"""The web app (``web-demo/``, built by ``make``) served at ``/``, and what it asks first.

Same origin as the API, so the app needs no CORS and no Node server. A path that names no
file is the app's own route (``/chat/<thread>``, ``/admin``): a browser asking for HTML gets
``index.html``, anything else the API's JSON 404. Built assets have content-hashed names and
are cached for a year; ``index.html`` is revalidated on every load.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from agent_server import __version__
from agent_server.api.deps import ServicesDep
from agent_server.api.guard import PUBLIC
from agent_server.api.models import RestModel
from agent_server.config import ConfigError

router = APIRouter(tags=["Web app"])

# Where `make` builds the app in a checkout.
BUILT_APP = Path(__file__).resolve().parents[2] / "web-demo" / "dist"
IMMUTABLE = "public, max-age=31536000, immutable"


class AppConfig(RestModel):
    auth: str
    clerk_publishable_key: str | None
    livekit: bool
    version: str


@router.get("/app/config", dependencies=[Depends(PUBLIC)], summary="What the web app needs first")
async def app_config(services: ServicesDep) -> AppConfig:
    """Public: whether to sign in (and Clerk's publishable key, which is public too) and
    whether voice can use LiveKit rooms."""
    settings = services.settings
    return AppConfig(
        auth=settings.auth,
        clerk_publishable_key=settings.clerk_publishable_key if settings.auth == "clerk" else None,
        livekit=not settings.missing_livekit(),
        version=__version__,
    )


class WebApp(StaticFiles):
    """The built app; see the module's docstring."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory=directory, check_dir=True)
        self.index = directory / "index.html"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in ("GET", "HEAD"):
            raise HTTPException(404)  # no API route has this path: not a page's business
        await super().__call__(scope, receive, send)

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            response = await super().get_response(path, scope)
        except HTTPException as error:
            if error.status_code != 404 or not _wants_page(scope):
                raise
            response = FileResponse(self.index)
        if path.startswith("assets/") and response.status_code == 200:
            response.headers["Cache-Control"] = IMMUTABLE
        else:
            response.headers["Cache-Control"] = "no-cache"
        return response


def _wants_page(scope: Scope) -> bool:
    headers: dict[bytes, bytes] = dict(scope["headers"])
    last = scope["path"].rsplit("/", 1)[-1]
    return b"text/html" in headers.get(b"accept", b"") and "." not in last


def built_app(directory: Path | None = None) -> WebApp | None:
    """The app built in ``directory`` (``CITADEL_WEB_DIR``), else the checkout's if it is
    built (``make`` builds it), else None."""
    if directory is not None and not (directory / "index.html").is_file():
        raise ConfigError(f"CITADEL_WEB_DIR: no built web app (index.html) in {directory}")
    directory = directory or BUILT_APP
    return WebApp(directory) if (directory / "index.html").is_file() else None
