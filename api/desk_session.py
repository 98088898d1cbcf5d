"""Who is at the review desk: a person who logged in with an API token, held in a cookie.

Browsers cannot send `Authorization: Bearer` from a plain page, so the login form takes
the same tokens the API takes (`vitrine api-token create`) and keeps the token in a
cookie that scripts cannot read (HttpOnly), that no other site's page can make the
browser send (SameSite=Strict), and that only `/desk` receives. Each request looks the
token up again, so revoking it ends the session at once.

Forms that change something (decisions, logout, search) also carry a per-session form
token derived from the session token, and are refused if the browser says they came from
another origin: a cross-site page can neither send the cookie nor know the form token.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from api.auth import context
from db import repository
from db.types import ApiClient
from ops.api_clients import token_hash

COOKIE = "vitrine_desk"
LOGIN = "/desk/login"


@dataclass(frozen=True)
class Session:
    """The desk's caller and the form token its pages embed."""

    client: ApiClient
    form_token: str


def lookup(request: Request, token: str) -> ApiClient | None:
    """The live client for `token` (None: unknown or revoked)."""
    if not token:
        return None
    with context(request).engine().connect() as conn:
        return repository.api_client_for_token(conn, token_sha256=token_hash(token))


def form_token(token: str) -> str:
    """A value only the session's holder can know, and that does not reveal the token."""
    return hmac.new(token.encode(), b"vitrine desk form", hashlib.sha256).hexdigest()


def session(request: Request) -> Session:
    """The logged-in caller, or a redirect to the login form (303)."""
    token = request.cookies.get(COOKIE, "")
    found = lookup(request, token)
    if found is None:
        raise HTTPException(303, "log in at /desk/login", {"Location": LOGIN})
    return Session(found, form_token(token))


Desk = Annotated[Session, Depends(session)]


def same_origin(request: Request) -> None:
    """403 unless the browser says the form came from this site (Origin, else Referer)."""
    claimed = request.headers.get("origin") or request.headers.get("referer") or ""
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    if claimed != own and not claimed.startswith(own + "/"):
        raise HTTPException(403, "form sent from another site")


def check_form(request: Request, desk: Session, sent: str) -> None:
    """403 unless the form is this session's and from this site."""
    same_origin(request)
    if not hmac.compare_digest(sent.encode(), desk.form_token.encode()):
        raise HTTPException(403, "stale or foreign form: reload the page")


def cookie_options(request: Request) -> dict[str, object]:
    """The session cookie's attributes (Secure when the desk is reached over HTTPS)."""
    return {
        "httponly": True,
        "samesite": "strict",
        "secure": request.url.scheme == "https",
        "path": "/desk",
        "max_age": 12 * 3600,
    }
