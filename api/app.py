"""The ASGI application: `create_app()` wires routes, limits, errors and metrics.

uvicorn calls it as a factory (`api.app:create_app`), once per worker process, so each
process opens its own database pool and loads the model for searches on first use,
after any fork.
"""

from __future__ import annotations

from fastapi import FastAPI

from api import desk, errors, health, metrics, reviews, routes
from api.limits import BodyLimit
from ops.context import Context, open_context
from ops.photo_search import PhotoEmbedder

DESCRIPTION = """Uploads in, labels and similar items out.

Every `/v1` route needs `Authorization: Bearer <token>` (`vitrine api-token create`).
A merchant's token sees and acts for that merchant only. Errors are JSON
`{"error": "<reason>"}`.

The [review desk](/desk) is the same data as web pages for people: browse the catalog,
work quality and label queues, search by photo (log in with an API token).
"""


def create_app(ctx: Context | None = None) -> FastAPI:
    ctx = ctx or open_context()
    app = FastAPI(
        title="vitrine",
        version="1",
        description=DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.ctx = ctx
    app.state.embedder = PhotoEmbedder(ctx)
    errors.install(app)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(routes.router)
    app.include_router(reviews.router)
    app.include_router(desk.router)
    # Outermost first in the list below: limits refuse a body before anything reads it,
    # and metrics see every answer, the refusals too.
    app.add_middleware(BodyLimit, max_bytes=ctx.settings.api_body_limit)
    app.add_middleware(metrics.RequestMetrics)
    return app
