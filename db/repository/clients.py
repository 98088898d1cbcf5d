"""What the HTTP API reads and writes: its clients, and one image in full.

Clients are made, found by the hash of their token, revoked.

Only the SHA-256 of a token reaches the database; the caller hashes (see
`ops.api_clients`). Revoked clients stay listed, so a name is never silently reused.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, and_, func, insert, select, update

from db.repository._shared import active_model_id
from db.schema import api_clients, images, models, predictions
from db.types import ApiClient


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


_COLUMNS = (
    api_clients.c.id,
    api_clients.c.name,
    api_clients.c.merchant_id,
    api_clients.c.created_at,
    api_clients.c.revoked_at,
)


def image_detail(conn: Connection, *, image_id: int) -> dict[str, Any] | None:
    """Everything the API's `GET /v1/images/{id}` shows, under the active model; None if
    there is no such image (or, for a merchant's role, none it may see)."""
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
                p.c.label,
                p.c.confidence,
                p.c.top_k,
                m.c.key.label("model"),
            )
            .select_from(joined)
            .where(images.c.id == image_id)
        )
        .mappings()
        .one_or_none()
    )
    return None if row is None else dict(row)
