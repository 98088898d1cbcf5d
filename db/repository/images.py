"""The image life cycle's writes: record uploads, claim, store results, fail or retry.

Batched writes are one statement per table for the whole batch. The transitions these
functions allow are described in `vitrine.db.repository`; the guards live in each statement's
WHERE clause, so a duplicate worker or a redelivered task cannot undo a `done` row.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Row,
    bindparam,
    case,
    func,
    literal,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert

from vitrine.db.repository.quality import save_quality
from vitrine.db.schema import embeddings, images, predictions
from vitrine.db.types import ClaimedImage, ImageResult
from vitrine.pipeline.types import Upload

# Keep a row's `error` readable; a full traceback belongs in the worker log.
MAX_ERROR_CHARS = 4000

_img_insert = pg_insert(images)
_img_failed = images.c.status == "failed"
# Executed with a list of parameter dicts: SQLAlchemy's "insertmanyvalues" sends it as
# one multi-row INSERT per 1000 rows (RETURNING is what enables that batching). On a
# redelivered event the row is kept as it is, but a failed one goes back to pending (the
# producer sent it again: try again), and a declared label sent late is kept.
_UPSERT_IMAGES = _img_insert.on_conflict_do_update(
    index_elements=[images.c.event_id],
    set_={
        "declared_label": func.coalesce(
            images.c.declared_label, _img_insert.excluded.declared_label
        ),
        "status": case((_img_failed, literal("pending")), else_=images.c.status),
        "error": case((_img_failed, None), else_=images.c.error),
        "attempts": case((_img_failed, 0), else_=images.c.attempts),
        "updated_at": func.now(),
    },
).returning(
    images.c.id,
    images.c.event_id,
    images.c.status,
    # xmax is 0 on a row this statement inserted, the updating transaction's id otherwise.
    literal_column("xmax = 0").label("created"),
)


@dataclass(frozen=True)
class Recorded:
    """What recording an upload event did: its row, whether the row is new (False: the
    same event was received before) and the row's status now."""

    image_id: int
    created: bool
    status: str


def new_event_id() -> str:
    return f"uuid:{uuid.uuid4()}"


def record_uploads(conn: Connection, *, uploads: Sequence[Upload]) -> list[Recorded]:
    """Record upload events; one `Recorded` per upload, in input order.

    Keyed on the event (`Upload.event_id`; None: a new event): each event is its own row,
    so the same bytes under another SKU or merchant are never merged into one. The same
    event again (a redelivery) finds its row: a `done` or in-flight row keeps its status,
    a `failed` one goes back to `pending` with error cleared and attempts reset to 0.
    Uploads within `uploads` that share an event share its row.
    """
    if not uploads:
        return []
    named = [u if u.event_id else dataclasses.replace(u, event_id=new_event_id()) for u in uploads]
    unique: dict[str, Upload] = {}
    for upload in named:
        unique.setdefault(str(upload.event_id), upload)
    # Input order, so ids grow in upload order. (Two producers re-sending the same
    # existing events in opposite orders at the same moment can deadlock; PostgreSQL
    # aborts one of them with a DBAPIError, which callers already retry.)
    rows = [
        {
            "event_id": u.event_id,
            "merchant_id": u.merchant_id,
            "uri": u.uri,
            "sku": u.sku,
            "declared_label": u.declared_label,
        }
        for u in unique.values()
    ]
    recorded: dict[str, Recorded] = {}
    for row in conn.execute(_UPSERT_IMAGES, rows):
        recorded[row.event_id] = Recorded(int(row.id), bool(row.created), str(row.status))
    out: list[Recorded] = []
    seen: set[str] = set()
    for upload in named:
        event = str(upload.event_id)
        # A second upload of one event in the same call was "received" by the first.
        first = recorded[event]
        out.append(first if event not in seen else dataclasses.replace(first, created=False))
        seen.add(event)
    return out


def upsert_pending_images(conn: Connection, *, uploads: Sequence[Upload]) -> list[int]:
    """`record_uploads`, the image ids alone."""
    return [r.image_id for r in record_uploads(conn, uploads=uploads)]


def claim_images(conn: Connection, *, image_ids: Sequence[int]) -> dict[int, ClaimedImage]:
    """Mark images `processing` and count the attempt, in one statement; ids with nothing
    to do are absent.

    Claimable: `pending`, and `processing` (a redelivery after a worker died mid-task).
    Not claimable: `done` (a redelivered task must not redo it) and `failed` (terminal
    until the merchant uploads again) -- and unknown ids.

    Rows are locked in id order, so concurrent batches claiming overlapping ids cannot
    deadlock each other.
    """
    if not image_ids:
        return {}
    locked = (
        select(images.c.id)
        .where(
            images.c.id.in_(sorted(set(image_ids))), images.c.status.in_(("pending", "processing"))
        )
        .order_by(images.c.id)
        .with_for_update()
        .scalar_subquery()
    )
    stmt = (
        update(images)
        .where(images.c.id.in_(locked))
        .values(status="processing", attempts=images.c.attempts + 1, updated_at=func.now())
        .returning(*_CLAIMED_COLUMNS)
    )
    return {int(row.id): _claimed(row) for row in conn.execute(stmt)}


_CLAIMED_COLUMNS = (
    images.c.id,
    images.c.uri,
    images.c.merchant_id,
    images.c.sku,
    images.c.attempts,
    images.c.error,
)


def _claimed(row: Row[Any]) -> ClaimedImage:
    return ClaimedImage(
        id=int(row.id),
        uri=row.uri,
        merchant_id=row.merchant_id,
        sku=row.sku,
        attempts=int(row.attempts),
        last_error=row.error,
    )


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
        "declared_score": _pred_insert.excluded.declared_score,
        "unknown_score": _pred_insert.excluded.unknown_score,
        "unknown": _pred_insert.excluded.unknown,
        "created_at": func.now(),
    },
).returning(predictions.c.image_id)

# `embedding` is bound through pgvector's SQLAlchemy VECTOR type, whose bind processor
# takes the float32 numpy row as it is (pgvector.Vector(ndarray): no per-element
# Python floats on our side).
_UPSERT_EMBEDDINGS = _emb_insert.on_conflict_do_update(
    index_elements=[embeddings.c.image_id, embeddings.c.model_id],
    set_={"embedding": _emb_insert.excluded.embedding, "created_at": func.now()},
).returning(embeddings.c.image_id)

# The images of a batch that still exist, locked against deletion (not against the
# worker's own UPDATE) in id order, as claim_images locks them.
_LOCK_LIVE = (
    select(images.c.id, images.c.declared_label)
    .where(images.c.id == func.any(bindparam("ids", type_=ARRAY(BigInteger))))
    .order_by(images.c.id)
    .with_for_update(read=True, key_share=True)
)

_MARK_DONE = text(
    """
    UPDATE images AS i
       SET status = 'done', error = NULL,
           sha256 = v.sha256, width = v.width, height = v.height, format = v.format,
           phash = v.phash::bit(320), processed_at = now(), updated_at = now()
      FROM unnest(CAST(:ids AS bigint[]), CAST(:sha256 AS text[]),
                  CAST(:width AS integer[]), CAST(:height AS integer[]),
                  CAST(:format AS text[]), CAST(:phash AS text[]))
           AS v(id, sha256, width, height, format, phash)
     WHERE i.id = v.id
    """
)


def save_results(conn: Connection, *, results: Sequence[ImageResult]) -> list[int]:
    """Store a batch of results: upsert predictions and embeddings, mark images done;
    return the ids of the images stored.

    One statement per table for the whole batch (per 1000 rows). Results for the same
    (image, model) within one batch: the last one wins. Each embedding is bound as the
    numpy array the model produced; a float32 row is stored bit for bit.

    An image erased (`vitrine forget`) after it was claimed is skipped, not an error
    that fails the batch: its row is gone, and nothing here may bring any of it back.
    The surviving rows are locked FOR KEY SHARE first, so an erasure that starts now
    waits for this transaction and then deletes what it stored, by cascade.
    """
    if not results:
        return []
    latest: dict[tuple[int, int], ImageResult] = {}
    for result in results:
        latest[(result.image_id, result.model_id)] = result
    declared = dict(conn.execute(_LOCK_LIVE, {"ids": sorted({i for i, _ in latest})}).all())
    # Sorted: concurrent batches touching the same rows lock them in the same order.
    batch = [latest[key] for key in sorted(latest) if key[0] in declared]
    if not batch:
        return []

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
                "declared_score": r.prediction.score_of(declared[r.image_id]),
                "unknown_score": r.prediction.unknown_score,
                "unknown": r.prediction.unknown,
            }
            for r in batch
        ],
    ).close()
    conn.execute(
        _UPSERT_EMBEDDINGS,
        [
            {"image_id": r.image_id, "model_id": r.model_id, "embedding": r.prediction.embedding}
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
            "phash": [info.phash for info in per_image.values()],
        },
    )
    measured = {i: info.quality for i, info in per_image.items() if info.quality is not None}
    save_quality(conn, measures=measured)  # same transaction: results and figures together
    return list(per_image)


def mark_failed(conn: Connection, *, image_id: int, error: str) -> None:
    """Terminal failure with its reason. A row already `done` is left alone."""
    conn.execute(
        update(images)
        .where(images.c.id == image_id, images.c.status != "done")
        .values(status="failed", error=error[:MAX_ERROR_CHARS], updated_at=func.now())
    )
