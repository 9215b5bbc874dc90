"""The ops console: server-rendered pages under ``/ui/``, served by ``taskledger api``.

:func:`mount` adds them to the API app (same process, same settings, same database pool):
the overview (:mod:`~consumer.ui.routes_read`), tasks and failures, the dead letters
(:mod:`~consumer.ui.routes_dlq`), the pause queue and login (:mod:`~consumer.ui.routes_control`),
and the stylesheet under ``/ui/static``. Login and CSRF: :mod:`~consumer.ui.auth`; error
pages and security headers: :mod:`~consumer.ui.render`. No JavaScript: every page works
with forms and links, and none is part of the OpenAPI document.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.staticfiles import StaticFiles

from consumer.ui import routes_control, routes_dlq, routes_read
from consumer.ui.auth import prepare
from consumer.ui.jobs import stop_jobs_with
from consumer.ui.render import STATIC_DIR, ConsoleRoute, error_page

__all__ = ["mount", "router"]

router = APIRouter(route_class=ConsoleRoute, dependencies=[Depends(prepare)])
router.include_router(routes_read.router)
router.include_router(routes_dlq.router)
router.include_router(routes_control.router)


@router.api_route(
    "/ui/{rest:path}",
    methods=["GET", "POST"],
    include_in_schema=False,
)
async def not_a_page(request: Request, rest: str) -> HTMLResponse:
    """Any other path under /ui/ (or a method a page does not take): the console's 404 page."""
    return error_page(request, 404, f"no console page {request.method} {request.url.path}")


def mount(app: FastAPI) -> None:
    """Serve the console on ``app``: the pages, ``/ui`` -> ``/ui/``, the static files."""

    @app.get("/ui", include_in_schema=False)
    async def ui_root() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=308)

    # the static files first: the router ends with a catch-all for /ui/...
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="ui-static")
    app.include_router(router)
    stop_jobs_with(app)
