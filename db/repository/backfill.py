"""Catching up: what a model has not embedded yet, bulk loads, and lost messages.

A backfill walks images by id (keyset pagination, so it can stop and resume anywhere
and never re-reads a page as rows change behind it) and loads vectors with binary COPY,
which is an order of magnitude faster than row-by-row INSERTs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from pgvector import Vector
from sqlalchemy import Connection, bindparam, func, select, update
from sqlalchemy.exc import DBAPIError

from vitrine.db.engine import register_vector_types
from vitrine.db.repository.quality import save_quality
from vitrine.db.schema import embeddings, images, positive_int
from vitrine.db.types import EmbeddingRow
from vitrine.pipeline.types import ImageInfo


def images_missing_embeddings(
    conn: Connection,
    *,
    model_id: int,
    after_id: int,
    limit: int,
    statuses: Sequence[str] = ("done",),
) -> list[tuple[int, str]]:
    """`(id, uri)` of images with no embedding under `model_id`, `id > after_id`, by id.

    Keyset pagination for resumable backfills: pass the last id of one page as the next
    `after_id` (start at 0). `statuses` restricts which images count (default: those
    that decoded fine under some model); pass all four for "any".
    """
    missing = ~(
        select(embeddings.c.image_id)
        .where(embeddings.c.image_id == images.c.id, embeddings.c.model_id == model_id)
        .exists()
    )
    stmt = (
        select(images.c.id, images.c.uri)
        .where(images.c.id > after_id, images.c.status.in_(list(statuses)), missing)
        .order_by(images.c.id)
        .limit(limit)
    )
    return [(int(i), uri) for i, uri in conn.execute(stmt)]


def iter_images_missing_embeddings(
    conn: Connection,
    *,
    model_id: int,
    page_size: int = 5000,
    statuses: Sequence[str] = ("done",),
) -> Iterator[tuple[int, str]]:
    """Every `(id, uri)` lacking an embedding under `model_id`, by id, a page at a time.

    The pagination of `images_missing_embeddings` without the bookkeeping. Pages are
    read lazily, one query per `page_size` rows, so the caller may write each batch's
    embeddings (same connection) before the next page is fetched. Arguments are checked
    here, not at the first `next()`.
    """
    size = positive_int(page_size, "page_size")
    return _walk_missing(conn, model_id=model_id, page_size=size, statuses=tuple(statuses))


def _walk_missing(
    conn: Connection, *, model_id: int, page_size: int, statuses: tuple[str, ...]
) -> Iterator[tuple[int, str]]:
    after = 0
    while True:
        page = images_missing_embeddings(
            conn, model_id=model_id, after_id=after, limit=page_size, statuses=statuses
        )
        yield from page
        if len(page) < page_size:
            return
        after = page[-1][0]


def _copyable(value: npt.NDArray[np.floating[Any]] | Vector | Sequence[float]) -> Any:
    # pgvector's psycopg dumper takes a Vector or a 1-d ndarray as they are; anything
    # else (a list or tuple of floats) becomes one float32 array.
    if isinstance(value, Vector | np.ndarray):
        return value
    return np.asarray(value, dtype=np.float32)


_CREATE_LOAD_TABLE = (
    "CREATE TEMP TABLE IF NOT EXISTS _vitrine_embeddings_load "
    "(seq bigserial, image_id bigint, model_id integer, embedding vector) ON COMMIT DROP"
)
_MERGE_LOAD_TABLE = (
    "INSERT INTO embeddings (image_id, model_id, embedding) "
    "SELECT DISTINCT ON (image_id, model_id) image_id, model_id, embedding "
    "FROM _vitrine_embeddings_load ORDER BY image_id, model_id, seq DESC "
    "ON CONFLICT (image_id, model_id) DO UPDATE "
    "SET embedding = EXCLUDED.embedding, created_at = now()"
)


def copy_embeddings(conn: Connection, *, rows: Iterable[EmbeddingRow], upsert: bool = True) -> int:
    """Bulk-load embeddings with binary COPY; return how many rows were sent.

    `upsert=True` (default) COPYs into a temporary table and merges with one
    `INSERT ... ON CONFLICT DO UPDATE`, so a resumed backfill may resend rows (within
    one call the last row for an (image, model) wins). `upsert=False` COPYs straight into
    `embeddings`: fastest, but any existing (image, model) pair aborts the transaction.
    Vectors whose size differs from the model's `embedding_dim` are rejected by the
    model's HNSW index expression.
    """
    driver = conn.connection.driver_connection
    if driver is None:  # pragma: no cover - only for detached connections
        raise RuntimeError("connection has no DBAPI connection")
    if driver.adapters.types.get("vector") is None and not register_vector_types(driver):
        raise RuntimeError("the vector extension is not installed; run vitrine.db.migrate.upgrade")

    target = "_vitrine_embeddings_load" if upsert else "embeddings"
    copy_sql = f"COPY {target} (image_id, model_id, embedding) FROM STDIN WITH (FORMAT BINARY)"
    statement = copy_sql
    sent = 0
    try:
        with driver.cursor() as cur:
            if upsert:
                statement = _CREATE_LOAD_TABLE
                cur.execute(_CREATE_LOAD_TABLE)
                cur.execute(f"TRUNCATE {target}")
            statement = copy_sql
            with cur.copy(copy_sql) as copy:
                copy.set_types(["int8", "int4", "vector"])
                for row in rows:
                    copy.write_row((row.image_id, row.model_id, _copyable(row.embedding)))
                    sent += 1
            if upsert:
                statement = _MERGE_LOAD_TABLE
                cur.execute(_MERGE_LOAD_TABLE)
                cur.execute(f"TRUNCATE {target}")
    except psycopg.Error as exc:
        # Same exception types as everything else that goes through SQLAlchemy
        # (IntegrityError, DataError, ...), so callers need only one except clause.
        raise DBAPIError.instance(statement, None, exc, psycopg.Error) from exc
    return sent


def stale_images(conn: Connection, *, older_than_s: float, limit: int) -> list[tuple[int, str]]:
    """`(id, uri)` of images left `pending`/`processing` for longer than `older_than_s`.

    What a lost message leaves behind (a broker without persistence restarted, a task that
    ran out of retries while the database was down): `vitrine requeue` sends them again.
    """
    stmt = (
        select(images.c.id, images.c.uri)
        .where(
            images.c.status.in_(["pending", "processing"]),
            images.c.updated_at < func.now() - func.make_interval(0, 0, 0, 0, 0, 0, older_than_s),
        )
        .order_by(images.c.id)
        .limit(limit)
    )
    return [(int(i), uri) for i, uri in conn.execute(stmt)]


def requeue_stale(
    conn: Connection,
    *,
    older_than_s: float,
    limit: int,
    statuses: Sequence[str] = ("pending", "processing"),
) -> list[tuple[int, str]]:
    """Take up to `limit` images left in `statuses` longer than `older_than_s`, oldest
    first, and mark them as just touched; return their `(id, uri)` to be sent again.

    Touching `updated_at` is what keeps the next sweep from sending them once more before
    they could be processed; `FOR UPDATE SKIP LOCKED` lets two reapers (or a reaper and
    `vitrine requeue`) run at once without taking the same rows.
    """
    candidates = (
        select(images.c.id)
        .where(
            images.c.status.in_(list(statuses)),
            images.c.updated_at < func.now() - func.make_interval(0, 0, 0, 0, 0, 0, older_than_s),
        )
        .order_by(images.c.updated_at, images.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    stmt = (
        update(images)
        .where(images.c.id.in_(candidates))
        .values(updated_at=func.now())
        .returning(images.c.id, images.c.uri)
    )
    return sorted((int(i), uri) for i, uri in conn.execute(stmt))


def images_without_hash(conn: Connection, *, limit: int = 1_000_000) -> list[tuple[int, str]]:
    """`(id, uri)` of done images without a perceptual hash (never hashed, or cleared by a
    migration that changed the recipe), by id: what `vitrine backfill --hashes` measures."""
    rows = conn.execute(
        select(images.c.id, images.c.uri)
        .where(images.c.status == "done", images.c.phash.is_(None))
        .order_by(images.c.id)
        .limit(positive_int(limit, "limit"))
    )
    return [(int(i), str(u)) for i, u in rows]


def unhashed_count(conn: Connection) -> int:
    """How many done images `images_without_hash` would list."""
    stmt = select(func.count()).where(images.c.status == "done", images.c.phash.is_(None))
    return int(conn.execute(stmt).scalar_one())


def save_hashes(conn: Connection, *, infos: Mapping[int, ImageInfo]) -> None:
    """Store re-measured hashes and quality figures of done images (`infos` by image id)."""
    hashed = [
        {"image_id": image_id, "phash": info.phash}
        for image_id, info in sorted(infos.items())
        if info.phash is not None
    ]
    if hashed:
        conn.execute(
            update(images)
            .where(images.c.id == bindparam("image_id"))
            .values(phash=bindparam("phash")),
            hashed,
        )
    save_quality(
        conn,
        measures={i: info.quality for i, info in infos.items() if info.quality is not None},
    )
