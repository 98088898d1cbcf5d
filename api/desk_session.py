"""Who is at the review desk: a person who logged in with an API token, and their session.

Browsers cannot send `Authorization: Bearer` from a plain page, so the login form takes
the same tokens the API takes (`vitrine api-token create`). The token itself never goes
into the cookie: logging in makes a server-side session (`desk_sessions`, migration
0012), a random id whose SHA-256 alone is stored with the client it acts as and when it
expires (VITRINE_DESK_SESSION_HOURS). The cookie holds that id; scripts cannot read it
(HttpOnly), no other site's page can make the browser send it (SameSite=Strict), and only
`/desk` receives it. Logging out deletes the session; revoking or rotating the token
ends every session made with it at once, since each request looks the live client up.

Forms that change something (decisions, logout, search) also carry a form token derived
from the session id, and are refused if the browser says they came from another origin:
a cross-site page can neither send the cookie nor know the form token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from vitrine.api.auth import context
from vitrine.db import repository
from vitrine.db.types import ApiClient
from vitrine.ops.api_clients import token_hash

COOKIE = "vitrine_desk"
LOGIN = "/desk/login"


@dataclass(frozen=True)
class Session:
    """The desk's caller, its session's stored id and the form token its pages embed."""

    client: ApiClient
    form_token: str
    id_sha256: bytes


def client_for_token(request: Request, token: str) -> ApiClient | None:
    """The live client for an API token typed into the login form (None: unknown or
    revoked)."""
    if not token:
        return None
    with context(request).engine().connect() as conn:
        return repository.api_client_for_token(conn, token_sha256=token_hash(token))


def start_session(request: Request, client: ApiClient) -> str:
    """A new session for `client`; its id, for the cookie (only its hash is stored)."""
    session_id = secrets.token_urlsafe(32)
    hours = context(request).settings.desk_session_hours
    with context(request).engine().begin() as conn:
        repository.create_desk_session(
            conn,
            id_sha256=_digest(session_id),
            client_id=client.id,
            lifetime=timedelta(hours=hours),
        )
    return session_id


def end_session(request: Request, desk: Session) -> None:
    with context(request).engine().begin() as conn:
        repository.end_desk_session(conn, id_sha256=desk.id_sha256)


def form_token(session_id: str) -> str:
    """A value only the session's holder can know, and that does not reveal the id."""
    return hmac.new(session_id.encode(), b"vitrine desk form", hashlib.sha256).hexdigest()


def session(request: Request) -> Session:
    """The logged-in caller, or a redirect to the login form (303)."""
    session_id = request.cookies.get(COOKIE, "")
    found = None
    if session_id:
        with context(request).engine().connect() as conn:
            found = repository.desk_session_client(conn, id_sha256=_digest(session_id))
    if found is None:  # a cookie the server no longer knows: the session ended or expired
        where = LOGIN + "?expired=1" if session_id else LOGIN
        raise HTTPException(303, "log in at /desk/login", {"Location": where})
    return Session(found, form_token(session_id), _digest(session_id))


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
    """The session cookie's attributes (Secure when the desk is reached over HTTPS); the
    browser forgets it when the server-side session would expire anyway."""
    return {
        "httponly": True,
        "samesite": "strict",
        "secure": request.url.scheme == "https",
        "path": "/desk",
        "max_age": int(context(request).settings.desk_session_hours * 3600),
    }


def _digest(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()
