"""Every error the API returns is JSON `{"error": "<reason>"}` with a 4xx or 503 status;
the review desk's pages get the same reasons as pages (`vitrine.api.desk_pages`).

A client mistake must never come back as a 500 with a traceback: validation errors are
reduced to one line naming the field, `UserError` from ops (a bad photo, an unknown
label) is a 422 (`NotAllowed`, a thing the caller may never do, a 403), an unreachable
database (at start-up or mid-request) or broker a 503, and anything unexpected a
500 whose body says only that it was logged.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException

from vitrine.api.limits import BodyTooLarge
from vitrine.ops.errors import NotAllowed, ServerUnreachable, UserError

log = logging.getLogger("vitrine.api")


def error(status: int, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status, headers=headers)


def answer(
    request: Request, status: int, reason: str, headers: dict[str, str] | None = None
) -> Response:
    """The API's JSON error, or for the review desk's pages the same reason as a page in
    the desk's style (a redirect, such as the desk's way to its login, stays one)."""
    path = request.url.path
    if path != "/desk" and not path.startswith("/desk/"):
        return error(status, reason, headers)
    if 300 <= status < 400:
        return Response(status_code=status, headers=headers)
    from vitrine.api.desk_pages import error_page  # the desk's pages read forms (bodies -> here)

    shown = error_page(request, status, reason)
    shown.headers.update(headers or {})
    return shown


def install(app: FastAPI) -> None:
    """Register the handlers that give every failure one shape: JSON for the API, a page
    for the desk."""

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return answer(request, exc.status_code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return answer(request, 422, validation_reason(exc))

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, exc: BodyTooLarge) -> Response:
        return answer(request, 413, str(exc), {"connection": "close"})

    @app.exception_handler(NotAllowed)
    async def not_allowed(request: Request, exc: NotAllowed) -> Response:
        return answer(request, 403, str(exc))

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError) -> Response:
        return answer(request, 422, str(exc))

    @app.exception_handler(ServerUnreachable)
    async def unreachable(request: Request, exc: ServerUnreachable) -> Response:
        return answer(request, 503, str(exc))

    @app.exception_handler(OperationalError)
    async def database_gone(request: Request, exc: OperationalError) -> Response:
        """The database went away after start-up (restarting, down): try again later."""
        log.warning("database unreachable in %s %s: %s", request.method, request.url.path, exc)
        return answer(request, 503, "the database is not answering; try again in a minute")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        return answer(request, 500, "internal error (logged on the server)")


def validation_reason(exc: RequestValidationError | ValidationError) -> str:
    """The first problem as one line, e.g. `merchant_id: Field required`, for FastAPI's
    validation of parameters and for a body validated by hand (`vitrine.api.bodies`)."""
    problems = exc.errors()
    if not problems:
        return "invalid request"
    first = problems[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "body"
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{where}: {first.get('msg', 'invalid')}{more}"
