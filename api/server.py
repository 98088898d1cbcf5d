"""`vitrine serve`: uvicorn running `api.app:create_app`.

uvicorn's own access log is replaced by vitrine's logging set-up; `--workers N` runs N
processes (each loads the model for searches once, on first use).
"""

from __future__ import annotations

import uvicorn


def serve(*, host: str, port: int, workers: int = 1, log_level: str = "info") -> None:
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=30,
    )
