"""The API's own documentation: Swagger UI served offline, and the route table of the README.

:func:`add_docs` serves ``/docs`` with the Swagger UI assets of the
``swagger-ui-bundle-v2`` package under ``/docs/assets`` (no CDN: the page renders on
an air-gapped host). :func:`route_table` is the Markdown table of every route (method,
path, auth) that the README's "HTTP API routes" section carries (a test compares them);
``python -m consumer.http.docs`` prints it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import swagger_ui_bundle  # type: ignore[import-untyped]
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from consumer.http.limits import flat_routes, guarded

__all__ = ["ASSETS_PATH", "DOCS_PATH", "add_docs", "route_rows", "route_table"]

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"


def add_docs(app: FastAPI) -> None:
    """Serve Swagger UI at ``/docs`` from local assets (create the app with ``docs_url=None``)."""
    assets = Path(str(swagger_ui_bundle.swagger_ui_path))
    app.mount(ASSETS_PATH, StaticFiles(directory=assets), name="docs-assets")

    @app.get(DOCS_PATH, include_in_schema=False, response_class=HTMLResponse)
    async def docs() -> HTMLResponse:
        """Swagger UI of ``/openapi.json`` (assets served by this process)."""
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None},
        )


def route_rows(app: FastAPI, guard: Any) -> list[tuple[str, str, str]]:
    """(method, path, auth) of every route of ``app``, sorted by path then method.

    ``auth`` is ``token`` for a route that depends on ``guard`` (the token check),
    ``none`` otherwise; a static mount is listed as ``GET <path>/{file}``.
    """
    rows: set[tuple[str, str, str]] = set()
    for path, route in flat_routes(app.routes):
        if isinstance(route, APIRoute):
            auth = "token" if guarded(route, guard) else "none"
            rows.update((m, path, auth) for m in route.methods or ())
        elif isinstance(route, Route):
            rows.update((m, path, "none") for m in route.methods or ())
        elif isinstance(route, Mount):
            rows.add(("GET", f"{path}/{{file}}", "none"))
    rows = {r for r in rows if r[0] != "HEAD"}
    return sorted(rows, key=lambda r: (r[1], r[0]))


def route_table(app: FastAPI, guard: Any) -> str:
    """The Markdown table of :func:`route_rows` (header included), one line per route."""
    lines = ["| method | path | auth |", "|---|---|---|"]
    lines += [f"| {m} | `{p}` | {a} |" for m, p, a in route_rows(app, guard)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m consumer.http.docs: print the README's route table
    from consumer.core.settings import Settings
    from consumer.http.app import create_app
    from consumer.http.routes import require_token

    print(route_table(create_app(Settings()), require_token), end="")
