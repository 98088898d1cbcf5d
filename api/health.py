"""Liveness and readiness, for load balancers and container runtimes.

`/healthz` answers as long as the process serves requests: a failing dependency must
not get a healthy API process restarted. `/readyz` says whether requests can succeed
now: the database answers at this code's schema revision, the broker answers a PING,
and the active model's files are where the registry says and are loaded for search by
photo (a pod gets no searches that would wait seconds for the load).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from vitrine.db import repository
from vitrine.db.migrate import head_revision
from vitrine.ops.errors import OpsError
from vitrine.ops.models import check_model_dir
from vitrine.ops.servers import check_redis

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Database, broker and model are reachable")
def readyz(request: Request) -> JSONResponse:
    ctx = request.app.state.ctx
    checks: dict[str, Any] = {"database": "ok", "model": "ok"}
    try:
        with ctx.engine().connect() as conn:
            revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            active = repository.active_model(conn)
    except OpsError as exc:
        checks["database"] = checks["model"] = str(exc)
    except SQLAlchemyError as exc:  # the database went away after start-up
        checks["database"] = checks["model"] = f"unreachable ({type(exc).__name__})"
    else:
        if revision != head_revision():
            checks["database"] = f"at schema revision {revision}, this code needs {head_revision()}"
        if active is None:
            checks["model"] = "no active model (`vitrine db upgrade` registers one)"
        else:
            try:
                check_model_dir(Path(active.path))
            except OpsError as exc:
                checks["model"] = str(exc)
            else:
                checks["model"] = request.app.state.embedder.warm_state()
    try:
        check_redis(ctx.broker_url())
        checks["broker"] = "ok"
    except OpsError as exc:
        checks["broker"] = str(exc)
    ready = all(value == "ok" for value in checks.values())
    body = {"status": "ready" if ready else "not ready", "checks": checks}
    return JSONResponse(body, status_code=200 if ready else 503)
