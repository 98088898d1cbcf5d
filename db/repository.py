"""Every read and write the pipeline makes, as plain functions over a Connection.

Each function takes an explicit `sqlalchemy.Connection` and never commits: the caller
owns the transaction (`with engine.begin() as conn: ...`). Batched writes are one
statement per table for the whole batch.

Image life cycle::

    upsert_pending_images  -> pending
    claim_image            -> processing   (None if done or failed: nothing to do)
    save_results           -> done         (predictions + embeddings upserted)
    mark_pending           -> pending      (retryable error; optional last error kept)
    mark_failed            -> failed       (terminal; a re-upload resets it to pending)

A `done` row never goes back: re-uploading it, redelivering its task or a late
`mark_failed` from a duplicate worker leave it done.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from pgvector import Vector
from sqlalchemy import (
    Connection,
    Text,
    case,
    func,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError

from db.engine import register_vector_types
from db.schema import (
    IMAGE_STATUSES,
    embeddings,
    hnsw_index_ddl,
    hnsw_index_name,
    images,
    models,
    predictions,
)
from db.types import ClaimedImage, EmbeddingRow, ImageResult, ModelRow, Neighbour
from pipeline.types import ModelSpec, Upload

__all__ = [
    "ClaimedImage",
    "EmbeddingRow",
    "ImageResult",
    "ModelRow",
    "Neighbour",
    "activate_model",
    "active_model",
    "claim_image",
    "copy_embeddings",
    "drop_hnsw_index",
    "ensure_hnsw_index",
    "images_missing_embeddings",
    "label_counts",
    "list_models",
    "mark_failed",
    "mark_pending",
    "register_model",
    "save_results",
    "similar",
    "similar_raw_sql",
    "similar_sql",
    "similar_to_vector",
    "status_counts",
    "statuses",
    "upsert_pending_images",
]

# Transaction-scoped advisory lock serialising model registration/activation, so two
# workers starting together neither race on CREATE INDEX nor on "activate if none".
MODELS_LOCK_KEY = 0x76_69_74_72_69_6E_65_6D  # "vitrinem"

# Keep a row's `error` readable; a full traceback belongs in the worker log.
MAX_ERROR_CHARS = 4000


def _lock_models(conn: Connection) -> None:
    conn.execute(select(func.pg_advisory_xact_lock(MODELS_LOCK_KEY)))


def _positive_int(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return value


# --------------------------------------------------------------------------- models


def ensure_hnsw_index(conn: Connection, *, model_id: int, embedding_dim: int) -> bool:
    """Create model `model_id`'s partial HNSW index if missing; True if it was created.

    Checks the catalog first, so the common case (index exists) takes no lock on
    `embeddings`. Building it does take a SHARE lock on `embeddings` until the caller
    commits, i.e. concurrent result writes wait: register models before a big backfill,
    not during one.
    """
    ddl = hnsw_index_ddl(model_id, embedding_dim)
    exists = conn.execute(
        select(func.to_regclass(literal(hnsw_index_name(model_id), Text)).is_not(None))
    ).scalar_one()
    if exists:
        return False
    conn.execute(text(ddl))
    return True


def drop_hnsw_index(conn: Connection, *, model_id: int) -> None:
    """Drop model `model_id`'s HNSW index (offline bulk loads only).

    Loading many rows is several times faster without the index, then rebuilding it
    with `ensure_hnsw_index` (measured: 20k x 128-d, COPY 0.4 s + build 5.6 s instead of
    28 s with the index maintained row by row). But DROP INDEX takes an ACCESS EXCLUSIVE
    lock on `embeddings` until commit, blocking every reader, and while the index is
    gone nothing checks that model's vector size. Use it for a model that is not
    active, in a maintenance window, or on a fresh database.
    """
    conn.execute(text(f"DROP INDEX IF EXISTS {hnsw_index_name(model_id)}"))


def register_model(
    conn: Connection, *, spec: ModelSpec, path: str, activate_if_none: bool = True
) -> int:
    """Insert or refresh the `models` row for `spec.key`; return its id.

    Creates the model's HNSW index and, if no model is active and `activate_if_none`,
    activates it. Re-registering a key with a different `embedding_dim` raises
    `ValueError` (stored vectors and the index are tied to the dimension: bump the
    version instead).
    """
    _positive_int(spec.embedding_dim, "embedding_dim")
    _lock_models(conn)
    ins = pg_insert(models).values(
        key=spec.key,
        name=spec.name,
        version=spec.version,
        embedding_dim=spec.embedding_dim,
        labels=list(spec.labels),
        spec=spec.to_dict(),
        path=str(path),
    )
    stmt = ins.on_conflict_do_update(
        index_elements=[models.c.key],
        set_={
            "name": ins.excluded.name,
            "version": ins.excluded.version,
            "labels": ins.excluded.labels,
            "spec": ins.excluded.spec,
            "path": ins.excluded.path,
        },
        where=models.c.embedding_dim == ins.excluded.embedding_dim,
    ).returning(models.c.id)
    model_id = conn.execute(stmt).scalar_one_or_none()
    if model_id is None:
        stored = conn.execute(
            select(models.c.embedding_dim).where(models.c.key == spec.key)
        ).scalar_one()
        raise ValueError(
            f"model {spec.key!r} is already registered with embedding_dim={stored}; "
            f"refusing to change it to {spec.embedding_dim} (register a new version)"
        )
    ensure_hnsw_index(conn, model_id=model_id, embedding_dim=spec.embedding_dim)
    if activate_if_none:
        none_active = conn.execute(select(models.c.id).where(models.c.is_active)).first() is None
        if none_active:
            conn.execute(update(models).where(models.c.id == model_id).values(is_active=True))
    return int(model_id)


def activate_model(conn: Connection, *, key: str) -> None:
    """Make `key` the one active model, atomically (one transaction, serialised).

    Readers in other transactions see either the old or the new active model, never
    none or two. Raises `LookupError` if no model has that key.
    """
    _lock_models(conn)
    target = conn.execute(select(models.c.id).where(models.c.key == key)).scalar_one_or_none()
    if target is None:
        known = conn.execute(select(models.c.key).order_by(models.c.id)).scalars().all()
        raise LookupError(
            f"no model registered under key {key!r}; registered: {', '.join(known) or 'none'}"
        )
    # Two statements because PostgreSQL checks a non-deferrable unique index row by
    # row: flipping both rows in one UPDATE can transiently see two active rows.
    conn.execute(
        update(models).where(models.c.is_active, models.c.id != target).values(is_active=False)
    )
    conn.execute(
        update(models).where(models.c.id == target, ~models.c.is_active).values(is_active=True)
    )


def _model_rows(conn: Connection, *, only_active: bool) -> list[ModelRow]:
    n_embeddings = (
        select(func.count())
        .select_from(embeddings)
        .where(embeddings.c.model_id == models.c.id)
        .scalar_subquery()
    )
    stmt = select(
        models.c.id,
        models.c.key,
        models.c.name,
        models.c.version,
        models.c.embedding_dim,
        models.c.labels,
        models.c.path,
        models.c.is_active,
        models.c.created_at,
        n_embeddings.label("n_embeddings"),
    ).order_by(models.c.id)
    if only_active:
        stmt = stmt.where(models.c.is_active)
    return [
        ModelRow(
            id=row.id,
            key=row.key,
            name=row.name,
            version=row.version,
            embedding_dim=row.embedding_dim,
            labels=tuple(row.labels),
            path=row.path,
            is_active=row.is_active,
            created_at=row.created_at,
            n_embeddings=int(row.n_embeddings),
        )
        for row in conn.execute(stmt)
    ]


def active_model(conn: Connection) -> ModelRow | None:
    """The active model, or None if none was activated yet."""
    rows = _model_rows(conn, only_active=True)
    return rows[0] if rows else None


def list_models(conn: Connection) -> list[ModelRow]:
    """All registered models, oldest first."""
    return _model_rows(conn, only_active=False)


# --------------------------------------------------------------------------- images


_img_insert = pg_insert(images)
_img_failed = images.c.status == "failed"
# Executed with a list of parameter dicts: SQLAlchemy's "insertmanyvalues" sends it as
# one multi-row INSERT per 1000 rows (RETURNING is what enables that batching).
_UPSERT_IMAGES = _img_insert.on_conflict_do_update(
    index_elements=[images.c.merchant_id, images.c.uri],
    set_={
        "sku": func.coalesce(_img_insert.excluded.sku, images.c.sku),
        "status": case((_img_failed, literal("pending")), else_=images.c.status),
        "error": case((_img_failed, None), else_=images.c.error),
        "attempts": case((_img_failed, 0), else_=images.c.attempts),
        "updated_at": func.now(),
    },
).returning(images.c.id, images.c.merchant_id, images.c.uri)


def upsert_pending_images(conn: Connection, *, uploads: Sequence[Upload]) -> list[int]:
    """Record uploads; return one image id per upload, in input order.

    Keyed on (merchant_id, uri): re-uploading returns the existing id. A new non-null
    sku replaces the stored one. A `done` or in-flight row keeps its status; a `failed`
    row goes back to `pending` with error cleared and attempts reset to 0. Duplicates
    within `uploads` get the same id.
    """
    if not uploads:
        return []
    unique: dict[tuple[str, str], str | None] = {}
    for upload in uploads:
        key = (upload.merchant_id, upload.uri)
        # Last non-null sku wins, matching what sequential re-uploads would do.
        if upload.sku is not None or key not in unique:
            unique[key] = upload.sku

    # Input order, so ids grow in upload order. (Two producers re-sending the same
    # existing rows in opposite orders at the same moment can deadlock; PostgreSQL
    # aborts one of them with a DBAPIError, which callers already retry.)
    rows = [{"merchant_id": m, "uri": u, "sku": s} for (m, u), s in unique.items()]
    ids: dict[tuple[str, str], int] = {}
    for row in conn.execute(_UPSERT_IMAGES, rows):
        ids[(row.merchant_id, row.uri)] = int(row.id)
    return [ids[(upload.merchant_id, upload.uri)] for upload in uploads]


def claim_image(conn: Connection, *, image_id: int) -> ClaimedImage | None:
    """Mark an image `processing` and count the attempt; None if there is nothing to do.

    Claimable: `pending`, and `processing` (a redelivery after a worker died mid-task).
    Not claimable: `done` (a redelivered task must not redo it) and `failed` (terminal
    until the merchant uploads again) -- and unknown ids.
    """
    stmt = (
        update(images)
        .where(images.c.id == image_id, images.c.status.in_(("pending", "processing")))
        .values(status="processing", attempts=images.c.attempts + 1, updated_at=func.now())
        .returning(images.c.id, images.c.uri, images.c.merchant_id, images.c.sku, images.c.attempts)
    )
    row = conn.execute(stmt).first()
    if row is None:
        return None
    return ClaimedImage(
        id=int(row.id),
        uri=row.uri,
        merchant_id=row.merchant_id,
        sku=row.sku,
        attempts=int(row.attempts),
    )


def _vector_values(embedding: Iterable[float]) -> list[float]:
    return [float(v) for v in embedding]


_pred_insert = pg_insert(predictions)
_emb_insert = pg_insert(embeddings)

# Executed with a list of parameter dicts. The RETURNING clause is what makes
# SQLAlchemy's "insertmanyvalues" render the whole batch (up to 1000 rows) as ONE
# multi-row INSERT with a cached compiled form; without it psycopg would run one INSERT
# per row.
_UPSERT_PREDICTIONS = _pred_insert.on_conflict_do_update(
    index_elements=[predictions.c.image_id, predictions.c.model_id],
    set_={
        "label": _pred_insert.excluded.label,
        "label_index": _pred_insert.excluded.label_index,
        "confidence": _pred_insert.excluded.confidence,
        "top_k": _pred_insert.excluded.top_k,
        "created_at": func.now(),
    },
).returning(predictions.c.image_id)

_UPSERT_EMBEDDINGS = _emb_insert.on_conflict_do_update(
    index_elements=[embeddings.c.image_id, embeddings.c.model_id],
    set_={"embedding": _emb_insert.excluded.embedding, "created_at": func.now()},
).returning(embeddings.c.image_id)

_MARK_DONE = text(
    """
    UPDATE images AS i
       SET status = 'done', error = NULL,
           sha256 = v.sha256, width = v.width, height = v.height, format = v.format,
           processed_at = now(), updated_at = now()
      FROM unnest(CAST(:ids AS bigint[]), CAST(:sha256 AS text[]),
                  CAST(:width AS integer[]), CAST(:height AS integer[]),
                  CAST(:format AS text[])) AS v(id, sha256, width, height, format)
     WHERE i.id = v.id
    """
)


def save_results(conn: Connection, *, results: Sequence[ImageResult]) -> None:
    """Store a batch of results: upsert predictions and embeddings, mark images done.

    One statement per table for the whole batch (per 1000 rows). Results for the same
    (image, model) within one batch: the last one wins.
    """
    if not results:
        return
    latest: dict[tuple[int, int], ImageResult] = {}
    for result in results:
        latest[(result.image_id, result.model_id)] = result
    # Sorted: concurrent batches touching the same rows lock them in the same order.
    batch = [latest[key] for key in sorted(latest)]

    conn.execute(
        _UPSERT_PREDICTIONS,
        [
            {
                "image_id": r.image_id,
                "model_id": r.model_id,
                "label": r.prediction.label,
                "label_index": r.prediction.label_index,
                "confidence": float(r.prediction.confidence),
                "top_k": [
                    {"label": label, "score": float(score)} for label, score in r.prediction.top_k
                ],
            }
            for r in batch
        ],
    ).close()
    conn.execute(
        _UPSERT_EMBEDDINGS,
        [
            {
                "image_id": r.image_id,
                "model_id": r.model_id,
                "embedding": r.prediction.embedding,
            }
            for r in batch
        ],
    ).close()

    per_image = {r.image_id: r.info for r in batch}
    conn.execute(
        _MARK_DONE,
        {
            "ids": list(per_image),
            "sha256": [info.sha256 for info in per_image.values()],
            "width": [info.width for info in per_image.values()],
            "height": [info.height for info in per_image.values()],
            "format": [info.format for info in per_image.values()],
        },
    )


def mark_failed(conn: Connection, *, image_id: int, error: str) -> None:
    """Terminal failure with its reason. A row already `done` is left alone."""
    conn.execute(
        update(images)
        .where(images.c.id == image_id, images.c.status != "done")
        .values(status="failed", error=error[:MAX_ERROR_CHARS], updated_at=func.now())
    )


def mark_pending(conn: Connection, *, image_id: int, error: str | None = None) -> None:
    """Put an image back to `pending` for a retry, optionally recording the last error.

    A row already `done` is left alone.
    """
    conn.execute(
        update(images)
        .where(images.c.id == image_id, images.c.status != "done")
        .values(
            status="pending",
            error=None if error is None else error[:MAX_ERROR_CHARS],
            updated_at=func.now(),
        )
    )


def statuses(conn: Connection, *, image_ids: Sequence[int]) -> dict[int, tuple[str, str | None]]:
    """`{image_id: (status, error)}` for the ids that exist."""
    if not image_ids:
        return {}
    stmt = select(images.c.id, images.c.status, images.c.error).where(
        images.c.id.in_(list(image_ids))
    )
    return {int(row.id): (row.status, row.error) for row in conn.execute(stmt)}


def status_counts(conn: Connection) -> dict[str, int]:
    """Number of images per status; every status is present, zero if none."""
    counts = dict.fromkeys(IMAGE_STATUSES, 0)
    stmt = select(images.c.status, func.count()).group_by(images.c.status)
    for status, n in conn.execute(stmt):
        counts[status] = int(n)
    return counts


def label_counts(conn: Connection, *, model_id: int | None = None) -> list[tuple[str, int]]:
    """`(label, count)` under `model_id` (default: the active model), most frequent first.

    Empty when `model_id` is None and no model is active.
    """
    if model_id is None:
        model_id = conn.execute(select(models.c.id).where(models.c.is_active)).scalar()
        if model_id is None:
            return []
    n = func.count().label("n")
    stmt = (
        select(predictions.c.label, n)
        .where(predictions.c.model_id == model_id)
        .group_by(predictions.c.label)
        .order_by(n.desc(), predictions.c.label)
    )
    return [(label, int(count)) for label, count in conn.execute(stmt)]


# --------------------------------------------------------------------------- similarity


def similar_sql(image_id: int, k: int = 10) -> str:
    """The SQL an analyst types for "items like this one" (what `similar` runs)."""
    return (
        f"SELECT * FROM similar_images({_positive_int(image_id, 'image_id')}, "
        f"{_positive_int(k, 'k')});"
    )


def similar_raw_sql(*, model_id: int, embedding_dim: int, image_id: int, k: int = 10) -> str:
    """The same query without the function, spelled so the model's HNSW index is used.

    The model id and dimension must be literals matching the index
    `embeddings_hnsw_m<model_id>`; `similar_images()` builds exactly this text.
    """
    mid = _positive_int(model_id, "model_id")
    dim = _positive_int(embedding_dim, "embedding_dim")
    iid = _positive_int(image_id, "image_id")
    kk = _positive_int(k, "k")
    query = (
        f"(SELECT embedding::vector({dim}) FROM embeddings "
        f"WHERE image_id = {iid} AND model_id = {mid})"
    )
    return (
        "SELECT e.image_id, i.merchant_id, i.sku, i.uri, p.label,\n"
        f"       e.embedding::vector({dim}) <=> {query} AS distance\n"
        "  FROM embeddings e\n"
        "  JOIN images i ON i.id = e.image_id\n"
        f"  LEFT JOIN predictions p ON p.image_id = e.image_id AND p.model_id = {mid}\n"
        f" WHERE e.model_id = {mid} AND e.image_id <> {iid}\n"
        f" ORDER BY e.embedding::vector({dim}) <=> {query}\n"
        f" LIMIT {kk};"
    )


def _neighbours(conn: Connection, sql: str, params: dict[str, Any]) -> list[Neighbour]:
    return [
        Neighbour(
            image_id=int(row.image_id),
            merchant_id=row.merchant_id,
            sku=row.sku,
            uri=row.uri,
            label=row.label,
            distance=float(row.distance),
        )
        for row in conn.execute(text(sql), params)
    ]


def similar(conn: Connection, *, image_id: int, k: int = 10) -> list[Neighbour]:
    """The `k` nearest images to `image_id` under the active model, nearest first.

    Excludes the image itself; empty if it has no embedding for the active model.
    Raises (a database error) if no model is active.
    """
    return _neighbours(
        conn,
        "SELECT image_id, merchant_id, sku, uri, label, distance "
        "FROM similar_images(:image_id, :k)",
        {"image_id": int(image_id), "k": int(k)},
    )


def similar_to_vector(
    conn: Connection, *, embedding: Sequence[float], k: int = 10
) -> list[Neighbour]:
    """The `k` nearest images to an arbitrary vector under the active model."""
    return _neighbours(
        conn,
        "SELECT image_id, merchant_id, sku, uri, label, distance "
        "FROM similar_to_vector(CAST(:vec AS vector), :k)",
        {"vec": Vector(_vector_values(embedding)).to_text(), "k": int(k)},
    )


# --------------------------------------------------------------------------- backfills


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


def _as_vector(value: Any) -> Vector:
    if isinstance(value, Vector):
        return value
    if getattr(value, "ndim", None) is not None:  # numpy array: pgvector's fast path
        return Vector(value)
    return Vector(_vector_values(value))


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
        raise RuntimeError("the vector extension is not installed; run db.migrate.upgrade")

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
                    copy.write_row((row.image_id, row.model_id, _as_vector(row.embedding)))
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
