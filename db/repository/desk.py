"""The review desk's reads and its label decisions (api/desk.py, api/desk_decisions.py).

Pages are keyset-paginated on image id (`after`), never OFFSET: a page costs the same on
page 1 and page 200 of a 10,000-image catalog. Every read runs in the caller's scoped
transaction, so a merchant's desk sees its own images only (row-level security).

Queues are SQL sources of `(image_id, reason)`; an image leaves a queue once a decision
in `label_corrections` names that queue, and leaves every label queue (low confidence,
wrong category) once any decision, from any queue or the item page, fixed its label,
since a person has then vouched for it. An image delisted as a duplicate leaves the grid
and every queue. Near-duplicates and review photos are queues of pairs
(`vitrine.db.repository.pairs`). Views of later migrations (`label_mismatches`,
`review_mismatches`) are queues only where they exist and the caller may read them.
Every queue and filter has its count (`queue_count`, `browse_count`, `pair_count`).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Connection, text

from vitrine.db.repository._shared import EFFECTIVE, SOURCE
from vitrine.db.repository.pairs import NOT_DELISTED

#: Queue name -> SQL yielding (image_id, reason) for images waiting in it. Near-duplicates
#: and review photos are queues of pairs instead (`vitrine.db.repository.pairs`).
QUEUE_SOURCES: dict[str, str] = {
    "quality": "SELECT image_id, details AS reason FROM quality_issues",
    "low_confidence": (
        "SELECT image_id, 'confidence ' || round(confidence::numeric, 3) AS reason "
        "FROM predictions WHERE model_id = (SELECT id FROM models WHERE is_active) "
        "AND confidence < :below"
    ),
    "label_mismatches": (
        "SELECT image_id, format('declared %s; the model says %s (confidence %s); "
        "the declared category''s score %s', declared_label, predicted_label, "
        "round(confidence::numeric, 2), round(declared_score::numeric, 3)) AS reason "
        "FROM label_mismatches"
    ),
}
PAIR_QUEUES = ("duplicates", "review_mismatches")
#: Views that only some schemas have (made by a later migration than 0010's).
OPTIONAL_VIEWS = ("label_mismatches", "review_mismatches")
LABEL_QUEUES = ("low_confidence", "label_mismatches")

_FROM = (
    "FROM images i LEFT JOIN predictions p ON p.image_id = i.id "
    "AND p.model_id = (SELECT id FROM models WHERE is_active)"
)
_PHOTO = (
    f"i.id AS image_id, i.merchant_id, i.sku, i.sha256, {EFFECTIVE} AS label, "
    f"{SOURCE} AS label_source, p.confidence, p.unknown_score "
    "{more}" + _FROM
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


_BROWSED = (
    " WHERE i.status = 'done' "
    "AND (CAST(:merchant AS text) IS NULL OR i.merchant_id = :merchant) "
    f"AND (CAST(:label AS text) IS NULL OR {EFFECTIVE} = :label) "
    "AND (CAST(:sku AS text) IS NULL OR i.sku LIKE :sku ESCAPE '\\') "
    f"AND {NOT_DELISTED.format(id='i.id')} "
)


def _sku_pattern(sku: str | None) -> str | None:
    """LIKE pattern for a SKU or its beginning (`ab` finds `ab`, `ab-1`); wildcards typed
    are matched as themselves."""
    if not sku:
        return None
    return sku.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def browse(
    conn: Connection,
    *,
    merchant_id: str | None = None,
    label: str | None = None,
    sku: str | None = None,
    before: int | None = None,
    limit: int = 48,
) -> list[dict[str, Any]]:
    """Processed, listed images, newest first, with an id below `before` (the page's
    keyset); `sku` finds a SKU or the SKUs it begins."""
    rows = conn.execute(
        text(
            "SELECT " + _PHOTO.format(more="") + _BROWSED + "AND "
            "(CAST(:before AS bigint) IS NULL OR i.id < :before) ORDER BY i.id DESC LIMIT :limit"
        ),
        {
            "merchant": merchant_id,
            "label": label,
            "sku": _sku_pattern(sku),
            "before": before,
            "limit": limit,
        },
    )
    return [dict(r) for r in rows.mappings()]


def browse_count(
    conn: Connection,
    *,
    merchant_id: str | None = None,
    label: str | None = None,
    sku: str | None = None,
) -> int:
    """How many images `browse` pages through with these filters."""
    return int(
        conn.execute(
            text("SELECT count(*) " + _FROM + _BROWSED),
            {"merchant": merchant_id, "label": label, "sku": _sku_pattern(sku)},
        ).scalar_one()
    )


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
    source = QUEUE_SOURCES[queue]
    rows = conn.execute(
        text(
            "SELECT " + _PHOTO.format(more=", s.reason ") + f" JOIN ({source}) s "
            "ON s.image_id = i.id "
            "WHERE i.id > :after" + _waiting(queue) + "ORDER BY i.id LIMIT :limit"
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


def _waiting(queue: str) -> str:
    """SQL: the image of a queue row is in scope, listed and undecided for this queue. A
    label queue is done with an image once any decision (from any queue) fixed its label."""
    decided = "true" if queue in LABEL_QUEUES else "c.queue = :queue"
    return (
        " AND (CAST(:merchant AS text) IS NULL OR i.merchant_id = :merchant) "
        "AND NOT EXISTS (SELECT 1 FROM label_corrections c "
        f"WHERE c.image_id = i.id AND ({decided})) AND {NOT_DELISTED.format(id='i.id')} "
    )


def queue_count(
    conn: Connection, *, queue: str, merchant_id: str | None = None, below: float = 0.6
) -> int:
    """How many images wait in an image queue (`queue_items` pages through them)."""
    sql = f"SELECT count(*) FROM images i JOIN ({QUEUE_SOURCES[queue]}) s ON s.image_id = i.id "
    return int(
        conn.execute(
            text(sql + "WHERE true" + _waiting(queue)),
            {"queue": queue, "merchant": merchant_id, "below": below},
        ).scalar_one()
    )


def record_correction(
    conn: Connection,
    *,
    image_id: int,
    action: str,
    label: str | None,
    queue: str | None,
    decided_by: str,
    action_id: uuid.UUID | None = None,
) -> int | None:
    """Store one decision; `label` None approves the label shown (a person's earlier
    decision, else the active model's; an "unknown" photo approves the model's best
    guess). The model and the label before are recorded with it; the image's
    `person_label` follows by trigger (migration 0014). None: no such image, or nothing
    to approve (no prediction)."""
    row = conn.execute(
        text(
            "INSERT INTO label_corrections "
            "(image_id, model_id, action, label, previous_label, queue, decided_by, action_id) "
            "SELECT i.id, p.model_id, :action, "
            "coalesce(CAST(:label AS text), i.person_label, p.label), "
            f"{EFFECTIVE}, :queue, :who, :action_id FROM images i LEFT JOIN predictions p "
            "ON p.image_id = i.id AND p.model_id = (SELECT id FROM models WHERE is_active) "
            "WHERE i.id = :image "
            "AND coalesce(CAST(:label AS text), i.person_label, p.label) IS NOT NULL "
            "RETURNING id"
        ),
        {
            "image": image_id,
            "action": action,
            "label": label,
            "queue": queue,
            "who": decided_by,
            "action_id": action_id,
        },
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
    "browse_count",
    "queue_count",
    "PAIR_QUEUES",
    "photo_source",
    "queue_items",
    "LABEL_QUEUES",
    "OPTIONAL_VIEWS",
    "QUEUE_SOURCES",
    "record_correction",
    "corrections_for",
]
