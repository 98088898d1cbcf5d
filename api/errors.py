"""Every error the API returns is JSON `{"error": "<reason>"}` with a 4xx or 503 status.

A client mistake must never come back as a 500 with a traceback: validation errors are
reduced to one line naming the field, `UserError` from ops (a bad photo, an unknown
label) is a 422, an unreachable database or broker a 503, and anything unexpected a
500 whose body says only that it was logged.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from api.limits import BodyTooLarge
from ops.errors import ServerUnreachable, UserError

log = logging.getLogger("vitrine.api")


def error(status: int, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    """Register the handlers that give every failure the one JSON shape."""

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(422, validation_reason(exc))

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return error(413, str(exc), {"connection": "close"})

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError) -> JSONResponse:
        return error(422, str(exc))

    @app.exception_handler(ServerUnreachable)
    async def unreachable(request: Request, exc: ServerUnreachable) -> JSONResponse:
        return error(503, str(exc))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        return error(500, "internal error (logged on the server)")


def validation_reason(exc: RequestValidationError | ValidationError) -> str:
    """The first problem as one line, e.g. `merchant_id: Field required`, for FastAPI's
    validation of parameters and for a body validated by hand (`api.bodies`)."""
    problems = exc.errors()
    if not problems:
        return "invalid request"
    first = problems[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "body"
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{where}: {first.get('msg', 'invalid')}{more}"
