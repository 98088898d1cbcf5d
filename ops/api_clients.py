"""Tokens for the HTTP API: made once, shown once, stored as a hash, checked per request.

A token is `vt_` plus 43 URL-safe characters (256 random bits). Only its SHA-256 is
stored (`api_clients`), so a copy of the database cannot call the API. A client with a
merchant acts for that merchant only; one without is a platform client.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from db import repository
from db.types import ApiClient
from ops.context import Context
from ops.errors import UserError

TOKEN_PREFIX = "vt_"


@dataclass(frozen=True)
class NewToken:
    client: ApiClient
    token: str  # shown once; only its hash is kept


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def create_token(ctx: Context, *, name: str, merchant_id: str | None) -> NewToken:
    """A new client called `name` and its token."""
    if not name.strip():
        raise UserError("a client needs a name (--name), e.g. --name shop-frontend")
    if merchant_id is not None and not merchant_id.strip():
        raise UserError("--merchant must not be empty (leave it out for a platform client)")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    try:
        with ctx.engine().begin() as conn:
            client = repository.create_api_client(
                conn, name=name, token_sha256=token_hash(token), merchant_id=merchant_id
            )
    except IntegrityError:
        raise UserError(
            f"there is already a client called {name!r}: pick another name, or revoke it "
            f"first (`vitrine api-token revoke {name}`)"
        ) from None
    return NewToken(client, token)


def list_tokens(ctx: Context) -> list[ApiClient]:
    with ctx.engine().connect() as conn:
        return repository.list_api_clients(conn)


def revoke_token(ctx: Context, *, name: str) -> None:
    with ctx.engine().begin() as conn:
        if not repository.revoke_api_client(conn, name=name):
            raise UserError(f"no active client called {name!r} (`vitrine api-token list`)")
