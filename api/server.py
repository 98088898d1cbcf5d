"""`vitrine serve`: uvicorn running `vitrine.api.app:create_app`.

`--workers N` runs N processes (each loads the model for searches once, on first use).
The access log never carries a query string's values (`RedactQuery`): a client that puts
a token in a URL (`?token=...`) must not leave it in log files. With
VITRINE_API_METRICS_PORT set, Prometheus metrics are served on their own listener here,
not on the API's port (`vitrine.api.metrics`).
"""

from __future__ import annotations

import copy
import logging
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from vitrine.settings import get_settings


class RedactQuery(logging.Filter):
    """Access-log records keep the path and the names of query parameters, not values."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redacted(args[2]), *args[3:])
        return True


def redacted(path_with_query: str) -> str:
    """`/desk?token=vt_x&k=3` -> `/desk?token=…&k=…`."""
    parts = urlsplit(path_with_query)
    if not parts.query:
        return path_with_query
    names = [name for name, _ in parse_qsl(parts.query, keep_blank_values=True)]
    return parts.path + "?" + "&".join(f"{name}=…" for name in names)


def log_config() -> dict[str, Any]:
    """uvicorn's logging set-up with `RedactQuery` on the access log's handler (a
    dictConfig, so every worker process applies it itself)."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_query"] = {"()": "vitrine.api.server.RedactQuery"}
    config["handlers"]["access"]["filters"] = ["redact_query"]
    return config


def serve(*, host: str, port: int, workers: int = 1, log_level: str = "info") -> None:
    settings = get_settings()
    if settings.api_metrics_port is not None:
        from prometheus_client import start_http_server

        from vitrine.api.metrics import registry

        start_http_server(
            settings.api_metrics_port, addr=settings.api_metrics_host, registry=registry()
        )
    uvicorn.run(
        "vitrine.api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        log_config=log_config(),
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=30,
    )
