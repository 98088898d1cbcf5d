"""The API's own Prometheus metrics, and the `/metrics` route that serves them.

Labelled by the route *template* (`/v1/images/{image_id}`), never the raw path, so an
id per request cannot grow the series without bound. With several uvicorn worker
processes set PROMETHEUS_MULTIPROC_DIR (an empty directory per start) and the route
aggregates them; with one process the default registry is served.

Metrics say how busy the shop is and which routes fail, so not everyone may read them:
by default `/metrics` wants a platform client's bearer token (VITRINE_API_METRICS=token;
`public` opens it). With VITRINE_API_METRICS_PORT set they are served on that port alone,
on VITRINE_API_METRICS_HOST (default 127.0.0.1), for a scraper on a private network, and
`/metrics` on the API's port answers 404 (`vitrine.api.server` starts that listener).
"""

from __future__ import annotations

import os
import time

from fastapi import APIRouter, HTTPException, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vitrine.api.auth import Bearer, client, context, platform_client

REQUESTS = Counter(
    "vitrine_api_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
LATENCY = Histogram(
    "vitrine_api_request_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
UPLOADS = Counter("vitrine_api_uploads_total", "Uploads accepted by the API and queued", ["kind"])
SEARCHES = Counter("vitrine_api_searches_total", "Searches by photo answered")

router = APIRouter()


def registry() -> CollectorRegistry:
    """What to serve: every API process's metrics (multiprocess mode), or this one's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        combined = CollectorRegistry()
        multiprocess.MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
        return combined
    return DEFAULT_REGISTRY


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request, credentials: Bearer) -> Response:
    settings = context(request).settings
    if settings.api_metrics_port is not None:
        raise HTTPException(404, "metrics are served on their own port (VITRINE_API_METRICS_PORT)")
    if settings.api_metrics == "token":
        platform_client(client(request, credentials))
    return Response(generate_latest(registry()), media_type=CONTENT_TYPE_LATEST)


class RequestMetrics:
    """Counts and times every request by method, route template and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            REQUESTS.labels(method, template, str(status)).inc()
            LATENCY.labels(method, template).observe(time.perf_counter() - started)
