"""Who is calling: a bearer token, looked up by its hash; and what they may see.

A platform client (no merchant) may act for any merchant. A merchant's client works
inside a transaction that runs as the `vitrine_merchant` role with `vitrine.merchant_id`
set, so row-level security (migration 0002) hides every other merchant's rows from
every query, whatever the route forgets to filter. The API's own login must be allowed
to `SET ROLE vitrine_merchant` (a superuser, or `GRANT vitrine_merchant TO <login>`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Connection, text

from vitrine.api.rate_limits import RateLimits
from vitrine.db import repository
from vitrine.db.types import ApiClient
from vitrine.ops.api_clients import token_hash
from vitrine.ops.context import Context

_bearer = HTTPBearer(auto_error=False, description="A token from `vitrine api-token create`")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def context(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


def rate_limits(request: Request) -> RateLimits:
    limits: RateLimits = request.app.state.rate_limits
    return limits


Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def client(request: Request, credentials: Bearer) -> ApiClient:
    """The calling client, or 401."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(401, "missing bearer token (Authorization: Bearer <token>)", _CHALLENGE)
    with context(request).engine().connect() as conn:
        found = repository.api_client_for_token(
            conn, token_sha256=token_hash(credentials.credentials)
        )
    if found is None:
        raise HTTPException(401, "unknown or revoked token", _CHALLENGE)
    return found


Client = Annotated[ApiClient, Depends(client)]


def platform_client(caller: Client) -> ApiClient:
    """A client that acts for the whole platform (no merchant), or 403."""
    if caller.merchant_id is not None:
        raise HTTPException(403, "this needs a platform token (one made without --merchant)")
    return caller


def merchant_for(caller: ApiClient, requested: str | None) -> str:
    """The merchant an upload is for: a merchant's client may name only its own."""
    if caller.merchant_id is None:
        if not requested:
            raise HTTPException(422, "merchant_id is required for a platform client")
        return requested
    if requested and requested != caller.merchant_id:
        raise HTTPException(403, f"this token acts for merchant {caller.merchant_id!r} only")
    return caller.merchant_id


@contextmanager
def scoped(ctx: Context, caller: ApiClient) -> Iterator[Connection]:
    """A transaction that sees what `caller` may see (see the module docstring)."""
    with ctx.engine().begin() as conn:
        if caller.merchant_id is not None:
            conn.execute(text("SET LOCAL ROLE vitrine_merchant"))
            conn.execute(
                text("SELECT set_config('vitrine.merchant_id', :m, true)"),
                {"m": caller.merchant_id},
            )
        yield conn
