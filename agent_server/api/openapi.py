"""The OpenAPI document (``GET /openapi.json``) and its offline docs page (``GET /docs``).

Bodies read by hand (AG-UI's ``RunAgentInput``, which must tolerate unknown fields) are
declared with :func:`json_body`, which notes their models for :func:`build_openapi` to add
to the document's components. The docs page is Swagger UI served from an installed package
(``fastapi-offline``), never a CDN.
"""

from __future__ import annotations

import importlib.resources
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from starlette.responses import HTMLResponse, JSONResponse

from agent_server.api.guard import PUBLIC

DOCS_ASSETS = "/docs/assets"
_REF = "#/components/schemas/{model}"

router = APIRouter(include_in_schema=False)
_read_by_hand: list[type[BaseModel]] = []


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` declaring a JSON body of ``model`` that the route reads itself."""
    _read_by_hand.append(model)
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": _REF.format(model=model.__name__)}}
            },
        }
    }


@router.get("/openapi.json", dependencies=[Depends(PUBLIC)])
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(build_openapi(request.app, _read_by_hand))


@router.get("/docs", dependencies=[Depends(PUBLIC)])
async def docs(request: Request) -> HTMLResponse:
    return docs_page(request.app.title)


def build_openapi(app: FastAPI, read_by_hand: list[type[BaseModel]]) -> dict[str, Any]:
    """The document, made once: the routes' own, plus the models of :func:`json_body`."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    document = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for model in read_by_hand:
        found = model.model_json_schema(by_alias=True, ref_template=_REF)
        schemas.update(found.pop("$defs", {}))
        schemas[model.__name__] = found
    app.openapi_schema = document
    return document


def assets_directory() -> str:
    return str(importlib.resources.files("fastapi_offline") / "static")


def docs_page(title: str) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title=f"{title} — API",
        swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
    )
