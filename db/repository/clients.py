"""What the HTTP API reads and writes: its clients, the desk's sessions, one image in full.

Clients are made, found by the hash of their token, revoked, rotated. Only the SHA-256
of a token (or of a desk session id) reaches the database; the caller hashes (see
`vitrine.ops.api_clients`). Revoked clients stay listed for the record; their names may be
taken again (unique among live clients, migration 0012).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, select, update

from vitrine.db.repository._shared import active_model_id, effective_label, label_source
from vitrine.db.schema import api_clients, desk_sessions, images, models, predictions
from vitrine.db.types import ApiClient


def create_api_client(
    conn: Connection, *, name: str, token_sha256: bytes, merchant_id: str | None
) -> ApiClient:
    """A new client; `IntegrityError` if the name is taken."""
    row = conn.execute(
        insert(api_clients)
        .values(name=name, token_sha256=token_sha256, merchant_id=merchant_id)
        .returning(*_COLUMNS)
    ).one()
    return ApiClient(*row)


def api_client_for_token(conn: Connection, *, token_sha256: bytes) -> ApiClient | None:
    """The client whose token hashes to `token_sha256`, unless revoked."""
    row = conn.execute(
        select(*_COLUMNS).where(
            api_clients.c.token_sha256 == token_sha256, api_clients.c.revoked_at.is_(None)
        )
    ).one_or_none()
    return None if row is None else ApiClient(*row)


def list_api_clients(conn: Connection) -> list[ApiClient]:
    return [ApiClient(*row) for row in conn.execute(select(*_COLUMNS).order_by(api_clients.c.id))]


def revoke_api_client(conn: Connection, *, name: str) -> bool:
    """Revoke the client called `name`; False if there is no such active client."""
    result = conn.execute(
        update(api_clients)
        .where(api_clients.c.name == name, api_clients.c.revoked_at.is_(None))
        .values(revoked_at=func.now())
    )
    return bool(result.rowcount)


def rotate_api_client(conn: Connection, *, name: str, token_sha256: bytes) -> ApiClient | None:
    """Replace the live client `name` by a new one with the same merchant and this token,
    in the caller's transaction: the old token (and its desk sessions) stop working at
    the commit that makes the new one valid. None if there is no such live client."""
    old = conn.execute(
        update(api_clients)
        .where(api_clients.c.name == name, api_clients.c.revoked_at.is_(None))
        .values(revoked_at=func.now())
        .returning(api_clients.c.merchant_id)
    ).one_or_none()
    if old is None:
        return None
    return create_api_client(conn, name=name, token_sha256=token_sha256, merchant_id=old[0])


def create_desk_session(
    conn: Connection, *, id_sha256: bytes, client_id: int, lifetime: timedelta
) -> None:
    """A desk login for `client_id`, valid for `lifetime`; expired ones are cleared."""
    conn.execute(delete(desk_sessions).where(desk_sessions.c.expires_at <= func.now()))
    conn.execute(
        insert(desk_sessions).values(
            id_sha256=id_sha256, client_id=client_id, expires_at=func.now() + lifetime
        )
    )


def desk_session_client(conn: Connection, *, id_sha256: bytes) -> ApiClient | None:
    """The live client a desk session acts as; None when the session is unknown, ended,
    expired, or its client was revoked."""
    row = conn.execute(
        select(*_COLUMNS)
        .join(desk_sessions, desk_sessions.c.client_id == api_clients.c.id)
        .where(
            desk_sessions.c.id_sha256 == id_sha256,
            desk_sessions.c.expires_at > func.now(),
            api_clients.c.revoked_at.is_(None),
        )
    ).one_or_none()
    return None if row is None else ApiClient(*row)


def end_desk_session(conn: Connection, *, id_sha256: bytes) -> bool:
    """Log a desk session out; False if it was not there."""
    result = conn.execute(delete(desk_sessions).where(desk_sessions.c.id_sha256 == id_sha256))
    return bool(result.rowcount)


_COLUMNS = (
    api_clients.c.id,
    api_clients.c.name,
    api_clients.c.merchant_id,
    api_clients.c.created_at,
    api_clients.c.revoked_at,
)


def image_detail(conn: Connection, *, image_id: int) -> dict[str, Any] | None:
    """Everything the API's `GET /v1/images/{id}` shows, under the active model; None if
    there is no such image (or, for a merchant's role, none it may see). `label` is the
    effective one, `model_label` the model's own; `model_labels` the model's taxonomy."""
    p, m = predictions, models
    joined = images.outerjoin(
        p, and_(p.c.image_id == images.c.id, p.c.model_id == active_model_id())
    ).outerjoin(m, m.c.id == p.c.model_id)
    row = (
        conn.execute(
            select(
                images.c.id,
                images.c.merchant_id,
                images.c.sku,
                images.c.uri,
                images.c.status,
                images.c.error,
                images.c.width,
                images.c.height,
                images.c.format,
                images.c.created_at,
                images.c.processed_at,
                images.c.declared_label,
                effective_label(images, p).label("label"),
                label_source(images, p).label("label_source"),
                p.c.label.label("model_label"),
                p.c.confidence,
                p.c.top_k,
                p.c.unknown_score,
                m.c.key.label("model"),
                m.c.labels.label("model_labels"),
            )
            .select_from(joined)
            .where(images.c.id == image_id)
        )
        .mappings()
        .one_or_none()
    )
    return None if row is None else dict(row)
