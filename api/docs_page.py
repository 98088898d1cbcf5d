"""`/docs`: the OpenAPI page, with Swagger UI served by this server.

FastAPI's default page loads Swagger UI from a CDN, so on a machine without internet (a
private network, a laptop on a train) it stays blank. Swagger UI's own files (version 5,
the first to read the OpenAPI 3.1 FastAPI writes; static/swagger-ui/README.md) ship with
vitrine and are served under `/docs/static/`: the page names nothing outside this server.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

STATIC = "/docs/static"
FILES = Path(__file__).resolve().parent / "static" / "swagger-ui"


def install(app: FastAPI, *, openapi_url: str = "/openapi.json") -> None:
    """Serve `/docs` and its assets on `app` (created with `docs_url=None`)."""
    app.mount(STATIC, StaticFiles(directory=str(FILES)), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title}: API documentation",
            swagger_js_url=f"{STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{STATIC}/favicon-32x32.png",
        )
