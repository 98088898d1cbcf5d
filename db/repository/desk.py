"""The review desk's reads and its one write (api/desk.py).

Pages are keyset-paginated on image id (`after`), never OFFSET: a page costs the same on
page 1 and page 200 of a 10,000-image catalog. Every read runs in the caller's scoped
transaction, so a merchant's desk sees its own images only (row-level security).

Queues are SQL sources of `(image_id, reason)`; an image leaves a queue once a decision
in `label_corrections` names that queue, and leaves every label queue (low confidence,
wrong category, review mismatch) once any decision, from any queue or the item page,
fixed its label, since a person has then vouched for it. Views of later migrations
(`label_mismatches`, `review_mismatches`) are queues only where they exist and the caller
may read them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, text

_ANY_VIEW = (
    "SELECT DISTINCT ON (v.image_id) v.image_id, "
    "(to_jsonb(v) - 'image_id' - 'merchant_id' - 'uri' - 'sku')::text AS reason "
    "FROM {view} v ORDER BY v.image_id"
)
#: Queue name -> SQL yielding (image_id, reason) for images waiting in it.
QUEUE_SOURCES: dict[str, str] = {
    "quality": "SELECT image_id, details AS reason FROM quality_issues",
    "low_confidence": (
        "SELECT image_id, 'confidence ' || round(confidence::numeric, 3) AS reason "
        "FROM predictions WHERE model_id = (SELECT id FROM models WHERE is_active) "
        "AND confidence < :below"
    ),
    "duplicates": (
        "SELECT DISTINCT ON (image_id) image_id, "
        "'like #' || duplicate_id || ' (' || reason || ', ' || distance || ' bits)' AS reason "
        "FROM duplicate_candidates ORDER BY image_id, distance"
    ),
    "label_mismatches": _ANY_VIEW,
    "review_mismatches": _ANY_VIEW,
}
#: Views that only some schemas have (made by a later migration than 0010's).
OPTIONAL_VIEWS = ("label_mismatches", "review_mismatches")
LABEL_QUEUES = ("low_confidence", "label_mismatches", "review_mismatches")

_PHOTO = (
    "i.id AS image_id, i.merchant_id, i.sku, i.sha256, p.label, p.confidence "
    "{more}FROM images i LEFT JOIN predictions p ON p.image_id = i.id "
    "AND p.model_id = (SELECT id FROM models WHERE is_active)"
)


def readable_views(conn: Connection) -> set[str]:
    """Those of `OPTIONAL_VIEWS` that exist and the current role may read."""
    rows = conn.execute(
        text(
            "SELECT v FROM unnest(CAST(:views AS text[])) AS v "
            "WHERE to_regclass(v) IS NOT NULL AND has_table_privilege(v, 'SELECT')"
        ),
        {"views": list(OPTIONAL_VIEWS)},
    )
    return {str(r.v) for r in rows}


def merchants(conn: Connection) -> list[str]:
    """Every merchant with images, in order (a loose index scan on images' merchant)."""
    rows = conn.execute(
        text(
            "WITH RECURSIVE m(id) AS ("
            " (SELECT merchant_id FROM images ORDER BY merchant_id LIMIT 1)"
            " UNION ALL SELECT (SELECT merchant_id FROM images WHERE merchant_id > m.id"
            " ORDER BY merchant_id LIMIT 1) FROM m WHERE m.id IS NOT NULL)"
            " SELECT id FROM m WHERE id IS NOT NULL"
        )
    )
    return [str(r.id) for r in rows]


def browse(
    conn: Connection,
    *,
    merchant_id: str | None = None,
    label: str | None = None,
    before: int | None = None,
    limit: int = 48,
) -> list[dict[str, Any]]:
    """Processed images, newest first, with an id below `before` (the page's keyset)."""
    rows = conn.execute(
        text(
            "SELECT " + _PHOTO.format(more="") + " WHERE i.status = 'done' "
            "AND (CAST(:merchant AS text) IS NULL OR i.merchant_id = :merchant) "
            "AND (CAST(:label AS text) IS NULL OR p.label = :label) "
            "AND (CAST(:before AS bigint) IS NULL OR i.id < :before) "
            "ORDER BY i.id DESC LIMIT :limit"
        ),
        {"merchant": merchant_id, "label": label, "before": before, "limit": limit},
    )
    return [dict(r) for r in rows.mappings()]


def queue_items(
    conn: Connection,
    *,
    queue: str,
    merchant_id: str | None = None,
    after: int = 0,
    limit: int = 24,
    below: float = 0.6,
) -> list[dict[str, Any]]:
    """Undecided images of `queue` with an id above `after`, in id order, with why they
    wait (`reason`). `below` is the low-confidence threshold."""
    source = QUEUE_SOURCES[queue].format(view=queue)
    # a label queue is done with an image once any decision (from any queue) fixed its label
    decided = "true" if queue in LABEL_QUEUES else "c.queue = :queue"
    rows = conn.execute(
        text(
            "SELECT " + _PHOTO.format(more=", s.reason ") + f" JOIN ({source}) s "
            "ON s.image_id = i.id "
            "WHERE i.id > :after "
            "AND (CAST(:merchant AS text) IS NULL OR i.merchant_id = :merchant) "
            "AND NOT EXISTS (SELECT 1 FROM label_corrections c "
            f"WHERE c.image_id = i.id AND ({decided})) "
            "ORDER BY i.id LIMIT :limit"
        ),
        {
            "queue": queue,
            "merchant": merchant_id,
            "after": after,
            "limit": limit,
            "below": below,
        },
    )
    return [dict(r) for r in rows.mappings()]


def record_correction(
    conn: Connection,
    *,
    image_id: int,
    action: str,
    label: str | None,
    queue: str | None,
    decided_by: str,
) -> int | None:
    """Store one decision; `label` None approves the active model's label. The model and
    its label at this moment are recorded with it. None: no such image, or nothing to
    approve (no prediction)."""
    row = conn.execute(
        text(
            "INSERT INTO label_corrections "
            "(image_id, model_id, action, label, previous_label, queue, decided_by) "
            "SELECT i.id, p.model_id, :action, coalesce(CAST(:label AS text), p.label), "
            "p.label, :queue, :who FROM images i LEFT JOIN predictions p "
            "ON p.image_id = i.id AND p.model_id = (SELECT id FROM models WHERE is_active) "
            "WHERE i.id = :image AND coalesce(CAST(:label AS text), p.label) IS NOT NULL "
            "RETURNING id"
        ),
        {"image": image_id, "action": action, "label": label, "queue": queue, "who": decided_by},
    ).one_or_none()
    return None if row is None else int(row.id)


def photo_source(conn: Connection, *, image_id: int) -> tuple[str, str | None] | None:
    """(uri, sha256) of an image the caller may see, for its thumbnail; None if none."""
    row = conn.execute(
        text("SELECT uri, sha256 FROM images WHERE id = :image"), {"image": image_id}
    ).one_or_none()
    return None if row is None else (str(row.uri), row.sha256)


def corrections_for(conn: Connection, *, image_id: int) -> list[dict[str, Any]]:
    """An image's decisions, latest first (the item page's history)."""
    rows = conn.execute(
        text(
            "SELECT action, label, previous_label, queue, decided_by, decided_at "
            "FROM label_corrections WHERE image_id = :image ORDER BY decided_at DESC, id DESC"
        ),
        {"image": image_id},
    )
    return [dict(r) for r in rows.mappings()]


__all__ = [  # functions by use: menus, pages, queues, decisions
    "merchants",
    "readable_views",
    "browse",
    "photo_source",
    "queue_items",
    "LABEL_QUEUES",
    "OPTIONAL_VIEWS",
    "QUEUE_SOURCES",
    "record_correction",
    "corrections_for",
]
