"""Tokens for the HTTP API: made once, shown once, stored as a hash, checked per request.

A token is `vt_` plus 43 URL-safe characters (256 random bits). Only its SHA-256 is
stored (`api_clients`), so a copy of the database cannot call the API. A client with a
merchant acts for that merchant only; one without is a platform client. A revoked
client's name may be given to a new client; `rotate_token` does both in one transaction.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from vitrine.db import repository
from vitrine.db.types import ApiClient
from vitrine.ops.context import Context
from vitrine.ops.errors import UserError

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
    token = new_token()
    try:
        with ctx.engine().begin() as conn:
            client = repository.create_api_client(
                conn, name=name, token_sha256=token_hash(token), merchant_id=merchant_id
            )
    except IntegrityError:
        raise UserError(
            f"there is already an active client called {name!r}: pick another name, or "
            f"replace its token (`vitrine api-token rotate {name}`)"
        ) from None
    return NewToken(client, token)


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def rotate_token(ctx: Context, *, name: str) -> NewToken:
    """Replace the live client `name`'s token: the old one stops working, a new one with
    the same merchant is made, in one transaction (no moment with both or neither)."""
    token = new_token()
    with ctx.engine().begin() as conn:
        client = repository.rotate_api_client(conn, name=name, token_sha256=token_hash(token))
    if client is None:
        raise UserError(f"no active client called {name!r} (`vitrine api-token list`)")
    return NewToken(client, token)


def list_tokens(ctx: Context) -> list[ApiClient]:
    with ctx.engine().connect() as conn:
        return repository.list_api_clients(conn)


def revoke_token(ctx: Context, *, name: str) -> None:
    with ctx.engine().begin() as conn:
        if not repository.revoke_api_client(conn, name=name):
            raise UserError(f"no active client called {name!r} (`vitrine api-token list`)")
