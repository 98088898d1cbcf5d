"""Erasure: delete a merchant's or one image's rows, prove nothing is left, audit it.

The images row is the root of everything vitrine keeps about an image: predictions,
embeddings and every later image-keyed table reference it with ON DELETE CASCADE, so
deleting the images rows is the whole erasure. `image_rows_left` checks that promise on
the live catalog rather than trusting it, so a table added later without the cascade
makes an erasure fail (and roll back) instead of silently keeping data.

Deletion locks the rows in id order, as `claim_images` and `save_results` do, so an
erasure and a worker's batch wait for each other instead of deadlocking; a worker that
saves after the erasure committed finds the row gone and stores nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement, Connection, delete, insert, select, text

from vitrine.db.repository._shared import id_in
from vitrine.db.schema import erasures, images
from vitrine.db.types import Erasure

SCOPES = ("merchant", "image")

# Tables (not views; partitions counted through their parent) with an image_id column.
_IMAGE_KEYED_TABLES = text(
    """
    SELECT c.relname
      FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
     WHERE c.relnamespace = current_schema()::regnamespace
       AND c.relkind IN ('r', 'p') AND NOT c.relispartition
       AND a.attname = 'image_id' AND NOT a.attisdropped
     ORDER BY c.relname
    """
)


def _target(scope: str, subject: str) -> ColumnElement[bool]:
    if scope == "merchant":
        return images.c.merchant_id == subject
    if scope == "image":
        return images.c.id == int(subject)
    raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")


def delete_images(conn: Connection, *, scope: str, subject: str) -> list[tuple[int, str]]:
    """Delete the images of a merchant (`scope` "merchant") or one image ("image");
    return (id, uri) of each row deleted, in id order. Cascades do the rest."""
    where = _target(scope, subject)
    locked = conn.execute(
        select(images.c.id).where(where).order_by(images.c.id).with_for_update()
    ).scalars()
    ids = list(locked)
    if not ids:
        return []
    gone = conn.execute(
        delete(images).where(id_in(images.c.id, ids)).returning(images.c.id, images.c.uri)
    )
    return sorted((int(row.id), str(row.uri)) for row in gone)


def image_rows_left(conn: Connection, *, image_ids: Sequence[int]) -> dict[str, int]:
    """Rows that still carry one of `image_ids`, per table with an `image_id` column.

    Empty after a complete erasure. Table names come from the catalog and are quoted as
    identifiers; the ids are one array parameter.
    """
    if not image_ids:
        return {}
    quote = conn.dialect.identifier_preparer.quote
    ids = [int(i) for i in image_ids]
    left: dict[str, int] = {}
    for name in conn.execute(_IMAGE_KEYED_TABLES).scalars():
        count = conn.execute(
            text(
                f"SELECT count(*) FROM {quote(name)} WHERE image_id = ANY(CAST(:ids AS bigint[]))"
            ),
            {"ids": ids},
        ).scalar_one()
        if count:
            left[str(name)] = int(count)
    return left


def delete_reviews(conn: Connection, *, merchant_id: str) -> list[tuple[int, str]]:
    """Delete the shoppers' review photos of a merchant's listings; their (id, uri)."""
    gone = conn.execute(
        text("DELETE FROM reviews WHERE merchant_id = :m RETURNING id, uri"), {"m": merchant_id}
    )
    return sorted((int(i), str(uri)) for i, uri in gone.all())


def referenced_uris(conn: Connection, *, uris: Sequence[str]) -> set[str]:
    """Which of `uris` an images or reviews row (of any merchant) still names: a file
    they share must stay. One scan of each table (uri alone is not indexed)."""
    if not uris:
        return set()
    stmt = text(
        "SELECT uri FROM images WHERE uri = ANY(CAST(:uris AS text[])) "
        "UNION SELECT uri FROM reviews WHERE uri = ANY(CAST(:uris AS text[]))"
    )
    return set(conn.execute(stmt, {"uris": list(set(uris))}).scalars())


def record_erasure(
    conn: Connection,
    *,
    scope: str,
    subject: str,
    os_user: str | None,
    images_deleted: int,
    files_deleted: int,
) -> Erasure:
    """Write the audit row; the database fills in `db_user` (session_user) and the time."""
    _target(scope, subject)  # the same validation as the deletion it records
    row = conn.execute(
        insert(erasures)
        .values(
            scope=scope,
            subject=subject,
            os_user=os_user,
            images_deleted=images_deleted,
            files_deleted=files_deleted,
        )
        .returning(*_COLUMNS)
    ).one()
    return Erasure(*row)


_COLUMNS = (
    erasures.c.id,
    erasures.c.scope,
    erasures.c.subject,
    erasures.c.db_user,
    erasures.c.os_user,
    erasures.c.images_deleted,
    erasures.c.files_deleted,
    erasures.c.erased_at,
)
