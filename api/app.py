"""The ASGI application: `create_app()` wires routes, limits, errors and metrics.

uvicorn calls it as a factory (`vitrine.api.app:create_app`), once per worker process, so each
process opens its own database pool and starts loading the model for searches as it
starts, after any fork (`/readyz` answers 503 until it is loaded).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from vitrine.api import (
    desk,
    desk_decisions,
    desk_explain,
    desk_failed,
    docs_page,
    errors,
    health,
    metrics,
    reviews,
    routes,
)
from vitrine.api.limits import BodyLimit
from vitrine.api.rate_limits import RateLimits
from vitrine.ops.context import Context, open_context
from vitrine.ops.photo_search import PhotoEmbedder

#: Routes that take a photo in their body; every other body is a small form or nothing.
PHOTO_ROUTES = ("/v1/uploads", "/v1/reviews", "/v1/search", "/desk/search")

DESCRIPTION = """Uploads in, labels and similar items out.

Every `/v1` route needs `Authorization: Bearer <token>` (`vitrine api-token create`).
A merchant's token sees and acts for that merchant only. Errors are JSON
`{"error": "<reason>"}`.

The [review desk](/desk) is the same data as web pages for people: browse the catalog,
work quality and label queues, search by photo (log in with an API token).
"""


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.embedder.warm_in_background()  # in this process, after any fork
    yield


def create_app(ctx: Context | None = None) -> FastAPI:
    ctx = ctx or open_context()
    app = FastAPI(
        lifespan=_lifespan,
        title="vitrine",
        version="1",
        description=DESCRIPTION,
        docs_url=None,  # served by docs_page, without a CDN
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.ctx = ctx
    app.state.embedder = PhotoEmbedder(ctx)
    broker = ctx.broker_url() if ctx.settings.rate_limit_storage == "broker" else None
    app.state.rate_limits = RateLimits(ctx.settings, broker)
    errors.install(app)
    docs_page.install(app)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(routes.router)
    app.include_router(reviews.router)
    app.include_router(desk.router)
    app.include_router(desk_decisions.router)
    app.include_router(desk_explain.router)
    app.include_router(desk_failed.router)
    # Outermost first in the list below: limits refuse a body before anything reads it,
    # and metrics see every answer, the refusals too.
    app.add_middleware(
        BodyLimit,
        max_bytes=ctx.settings.api_body_limit,
        photo_routes=PHOTO_ROUTES,
        form_bytes=ctx.settings.api_max_form_bytes,
    )
    app.add_middleware(metrics.RequestMetrics)
    return app
