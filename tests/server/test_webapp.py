"""The web app served at / (a stand-in build in a temporary directory, so these tests do not
depend on `make` having built web-demo/): pages for the app's routes, cached assets, and the
API's own answers left alone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from agent_server.app import create_app
from agent_server.config import ConfigError, Settings
from tests.conftest import citadel, double_model
from tests.doubles.ollama import OllamaDouble

INDEX = b'<!doctype html><div id="root"></div>'
HTML = {"Accept": "text/html,application/xhtml+xml"}


@pytest.fixture
def built(tmp_path: Path) -> Path:
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_bytes(INDEX)
    (tmp_path / "assets" / "index-abc123.js").write_text("console.log('app')")
    return tmp_path


@pytest.fixture
async def client(ollama: OllamaDouble, built: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        citadel(double_model(ollama), web_dir=built) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        yield client


@pytest.mark.parametrize("path", ["/", "/chat/thread_abc", "/admin", "/voice/thread_1"])
async def test_the_apps_routes_are_its_page(client: httpx.AsyncClient, path: str):
    response = await client.get(path, headers=HTML)
    assert response.status_code == 200
    assert response.content == INDEX
    assert response.headers["cache-control"] == "no-cache"


async def test_built_assets_are_cached_for_a_year(client: httpx.AsyncClient):
    response = await client.get("/assets/index-abc123.js")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/agui/nothing-here", 404, "not_found"),
        ("GET", "/assets/missing.js", 404, "not_found"),
        ("GET", "/api/copilotkit", 405, "method_not_allowed"),
        ("POST", "/chat/thread_abc", 404, "not_found"),
    ],
)
async def test_what_is_not_a_page_keeps_the_apis_json_errors(
    client: httpx.AsyncClient, method: str, path: str, status: int, code: str
):
    response = await client.request(method, path, headers=HTML if method == "POST" else {})
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


async def test_app_config_is_public_and_says_how_to_sign_in(client: httpx.AsyncClient):
    response = await client.get("/app/config")
    assert response.status_code == 200
    assert response.json() == {
        "auth": "off",
        "clerkPublishableKey": None,
        "livekit": False,
        "version": response.json()["version"],
    }


def test_a_web_dir_without_a_build_stops_the_server(tmp_path: Path):
    with pytest.raises(ConfigError, match="no built web app"):
        create_app(Settings(web_dir=tmp_path))
