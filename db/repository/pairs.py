"""The review desk's pairs, counts and actions (api/desk_decisions.py).

Near-duplicates and review photos are judged as pairs: two listing images that look
alike (`duplicate_pairs`, which the workers fill from `duplicate_candidates` as they
finish images: a desk page reads rows instead of probing the hash index per image), or
a shopper's review photo against its listing (`review_mismatches`). A verdict is one row
of `pair_decisions` (migration 0016), so a decided pair never comes back, and an image
delisted as a duplicate leaves every queue.

Every decision of one click shares an `action_id` (a bulk approval of a page is one
action, in `label_corrections` or `pair_decisions`); `undo_last` removes the latest action
of the person who asks, whole, and the image's `person_label` follows by trigger (0014).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.errors import QueryCanceled
from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError

from vitrine.db.repository._shared import EFFECTIVE, SOURCE

log = logging.getLogger(__name__)

DUPLICATE_DECISIONS = ("not_duplicate", "same_product", "delist_one")
REVIEW_DECISIONS = ("matches", "does_not_match")

#: An image a person delisted as a duplicate: gone from the desk's grid and queues.
NOT_DELISTED = (
    "NOT EXISTS (SELECT 1 FROM pair_decisions x WHERE x.delisted_image_id = {id} "
    "AND x.decision = 'delist_one')"
)

# Undecided pairs, neither side delisted (`duplicate_pairs` holds each pair once).
_DUPLICATES = (
    "SELECT {columns} FROM duplicate_pairs s"
    " JOIN images ia ON ia.id = s.image_id JOIN images ib ON ib.id = s.other_image_id"
    " WHERE (CAST(:merchant AS text) IS NULL OR ia.merchant_id = :merchant"
    "  OR ib.merchant_id = :merchant)"
    " AND NOT EXISTS (SELECT 1 FROM pair_decisions x WHERE x.kind = 'duplicate'"
    "  AND x.image_id = s.image_id AND x.other_image_id = s.other_image_id)"
    f" AND {NOT_DELISTED.format(id='s.image_id')}"
    f" AND {NOT_DELISTED.format(id='s.other_image_id')}"
    " {where}"
)

_REVIEWS = (
    "SELECT {columns} FROM review_mismatches r"
    " WHERE r.image_id IS NOT NULL"
    " AND (CAST(:merchant AS text) IS NULL OR r.merchant_id = :merchant)"
    " AND NOT EXISTS (SELECT 1 FROM pair_decisions x WHERE x.kind = 'review'"
    "  AND x.review_id = r.review_id)"
    " {where}"
)


def duplicate_pairs(
    conn: Connection,
    *,
    merchant_id: str | None = None,
    after: tuple[int, int] = (0, 0),
    limit: int = 24,
) -> list[dict[str, Any]]:
    """Undecided near-duplicate pairs after `after` (keyset on the pair's ids), each with
    both sides' facts (`left`, `right`: `photos`) and what links them (reason, distance in
    hash bits; 0 for the same bytes)."""
    rows = conn.execute(
        text(
            _DUPLICATES.format(
                columns="s.image_id AS a, s.other_image_id AS b, s.reason, s.distance",
                where="AND (s.image_id, s.other_image_id) > (:after_a, :after_b)"
                " ORDER BY s.image_id, s.other_image_id LIMIT :limit",
            )
        ),
        {"merchant": merchant_id, "after_a": after[0], "after_b": after[1], "limit": limit},
    ).all()
    facts = photos(conn, image_ids=[i for r in rows for i in (r.a, r.b)])
    return [
        {
            "left": facts.get(int(r.a), {"image_id": int(r.a)}),
            "right": facts.get(int(r.b), {"image_id": int(r.b)}),
            "reason": str(r.reason),
            "distance": int(r.distance),
        }
        for r in rows
    ]


def record_duplicates(
    conn: Connection, *, image_ids: Sequence[int], timeout_ms: int | None = None
) -> int:
    """Add the near-duplicate pairs of these images (one hash-index probe each, through
    `duplicate_candidates`); how many were new. The workers call it in the transaction that
    saves the images' hashes, with `timeout_ms`: a probe slower than that (a lock held
    elsewhere, a very busy index) loses the pairs, never the batch. It runs in a savepoint,
    so the results around it still commit, and a later copy's probe or `vitrine backfill
    --hashes` finds the pairs again; 0 is returned and a warning logged."""
    if not image_ids:
        return 0
    try:
        with conn.begin_nested():  # a savepoint: its rollback undoes the timeout setting too
            if timeout_ms is not None:
                previous = conn.execute(text("SELECT current_setting('statement_timeout')"))
                restore = previous.scalar_one()
                _statement_timeout(conn, str(timeout_ms))
            added = conn.execute(_RECORD_PAIRS, {"ids": sorted(set(image_ids))})
            if timeout_ms is not None:
                _statement_timeout(conn, restore)
            return int(added.rowcount or 0)
    except OperationalError as exc:
        if not isinstance(exc.orig, QueryCanceled):
            raise
        log.warning(
            "near-duplicate probe of %d image(s) took over %s ms; their pairs are left to a "
            "later copy or `vitrine backfill --hashes`",
            len(image_ids),
            timeout_ms,
        )
        return 0


def _statement_timeout(conn: Connection, value: str) -> None:
    """For the rest of this transaction only (`set_config(..., true)`)."""
    conn.execute(text("SELECT set_config('statement_timeout', :v, true)"), {"v": value})


_RECORD_PAIRS = text(
    "INSERT INTO duplicate_pairs (image_id, other_image_id, reason, distance) "
    "SELECT DISTINCT ON (least(d.image_id, d.duplicate_id), "
    "greatest(d.image_id, d.duplicate_id)) least(d.image_id, d.duplicate_id), "
    "greatest(d.image_id, d.duplicate_id), d.reason, d.distance "
    "FROM duplicate_candidates d WHERE d.image_id = ANY(CAST(:ids AS bigint[])) "
    "ORDER BY least(d.image_id, d.duplicate_id), greatest(d.image_id, d.duplicate_id), "
    "d.distance ON CONFLICT DO NOTHING"
)


def drop_duplicates(conn: Connection, *, image_ids: Sequence[int]) -> None:
    """Forget these images' pairs (their hashes are being measured again)."""
    conn.execute(
        text(
            "DELETE FROM duplicate_pairs WHERE image_id = ANY(CAST(:ids AS bigint[])) "
            "OR other_image_id = ANY(CAST(:ids AS bigint[]))"
        ),
        {"ids": sorted(set(image_ids))},
    )


def review_pairs(
    conn: Connection, *, merchant_id: str | None = None, after: int = 0, limit: int = 24
) -> list[dict[str, Any]]:
    """Undecided review photos that do not look like their listing, after review id
    `after`: the review (id, reference, uri, the model's label and confidence), the match
    score with the listing's images, and the listing image's facts (`listing`)."""
    rows = conn.execute(
        text(
            _REVIEWS.format(
                columns="r.review_id, r.image_id, r.review_ref, r.label, r.confidence,"
                " r.listing_label, r.match_score, r.reasons",
                where="AND r.review_id > :after ORDER BY r.review_id LIMIT :limit",
            )
        ),
        {"merchant": merchant_id, "after": after, "limit": limit},
    ).all()
    facts = photos(conn, image_ids=[int(r.image_id) for r in rows])
    return [
        {
            "review_id": int(r.review_id),
            "review_ref": r.review_ref,
            "label": r.label,
            "confidence": r.confidence,
            "listing_label": r.listing_label,
            "match_score": r.match_score,
            "reasons": list(r.reasons or []),
            "listing": facts.get(int(r.image_id), {"image_id": int(r.image_id)}),
        }
        for r in rows
    ]


def pair_count(conn: Connection, *, queue: str, merchant_id: str | None = None) -> int:
    """How many undecided pairs wait in `queue` ('duplicates' or 'review_mismatches')."""
    template = _DUPLICATES if queue == "duplicates" else _REVIEWS
    sql = template.format(columns="count(*)", where="")
    return int(conn.execute(text(sql), {"merchant": merchant_id}).scalar_one())


def photos(conn: Connection, *, image_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """What a pair shows of each image the caller may see: merchant, SKU, the label people
    read (and whose it is), the model's confidence."""
    if not image_ids:
        return {}
    rows = conn.execute(
        text(
            f"SELECT i.id AS image_id, i.merchant_id, i.sku, {EFFECTIVE} AS label, "
            f"{SOURCE} AS label_source, p.confidence, p.unknown_score "
            "FROM images i LEFT JOIN predictions p ON p.image_id = i.id "
            "AND p.model_id = (SELECT id FROM models WHERE is_active) "
            "WHERE i.id = ANY(CAST(:ids AS bigint[]))"
        ),
        {"ids": list(set(image_ids))},
    )
    return {int(r["image_id"]): dict(r) for r in rows.mappings()}


def review_source(conn: Connection, *, review_id: int) -> str | None:
    """The uri of a review photo the caller may see (for its thumbnail); None if none."""
    uri = conn.execute(
        text("SELECT uri FROM reviews WHERE id = :id"), {"id": review_id}
    ).scalar_one_or_none()
    return None if uri is None else str(uri)


def review_listing(conn: Connection, *, review_id: int) -> int | None:
    """The listing image a review photo is judged against (as `review_mismatches` pairs
    them), if the caller may see both."""
    found = conn.execute(
        text(
            "SELECT (SELECT min(i.id) FROM images i WHERE i.merchant_id = r.merchant_id "
            "AND i.sku = r.sku AND i.status = 'done') FROM reviews r WHERE r.id = :id"
        ),
        {"id": review_id},
    ).scalar_one_or_none()
    return None if found is None else int(found)


def new_action() -> uuid.UUID:
    """The id one click's decisions share."""
    return uuid.uuid4()


def record_pair_decision(
    conn: Connection,
    *,
    kind: str,
    image_id: int,
    other_image_id: int | None = None,
    review_id: int | None = None,
    decision: str,
    delisted_image_id: int | None = None,
    decided_by: str,
    action_id: uuid.UUID,
) -> int:
    """Store one verdict on a pair (a later verdict on the same pair replaces it); its id."""
    if kind == "duplicate":
        assert other_image_id is not None
        image_id, other_image_id = sorted((image_id, other_image_id))
    conflict = (
        "(image_id, other_image_id) WHERE kind = 'duplicate'"
        if kind == "duplicate"
        else "(review_id) WHERE kind = 'review'"
    )
    row = conn.execute(
        text(
            "INSERT INTO pair_decisions (kind, image_id, other_image_id, review_id, decision, "
            "delisted_image_id, action_id, decided_by) VALUES (:kind, :image, :other, :review, "
            ":decision, :delisted, :action, :who) "
            f"ON CONFLICT {conflict} DO UPDATE SET decision = EXCLUDED.decision, "
            "delisted_image_id = EXCLUDED.delisted_image_id, action_id = EXCLUDED.action_id, "
            "decided_by = EXCLUDED.decided_by, decided_at = now() RETURNING id"
        ),
        {
            "kind": kind,
            "image": image_id,
            "other": other_image_id,
            "review": review_id,
            "decision": decision,
            "delisted": delisted_image_id,
            "action": action_id,
            "who": decided_by,
        },
    ).one()
    return int(row.id)


@dataclass(frozen=True)
class LastAction:
    """A person's latest desk action: what it decided, about how many, when."""

    action_id: uuid.UUID
    what: str  # 'approve', 'relabel', or a pair decision
    label: str | None
    count: int
    image_id: int
    decided_at: datetime


_LAST = (
    "WITH latest AS (SELECT action_id FROM ("
    "  SELECT action_id, decided_at FROM label_corrections"
    "   WHERE decided_by = :who AND action_id IS NOT NULL"
    "  UNION ALL SELECT action_id, decided_at FROM pair_decisions WHERE decided_by = :who) z"
    " ORDER BY decided_at DESC LIMIT 1),"
    " decided AS ("
    "  SELECT action AS what, label, image_id, decided_at, id FROM label_corrections"
    "   WHERE decided_by = :who AND action_id = (SELECT action_id FROM latest)"
    "  UNION ALL SELECT decision, NULL, image_id, decided_at, id FROM pair_decisions"
    "   WHERE decided_by = :who AND action_id = (SELECT action_id FROM latest))"
    " SELECT (SELECT action_id FROM latest) AS action_id, what, label, image_id, decided_at,"
    " count(*) OVER () AS n FROM decided ORDER BY id LIMIT 1"
)


def last_action(conn: Connection, *, decided_by: str) -> LastAction | None:
    """The latest action of `decided_by` that undo would remove (None: nothing to undo)."""
    row = conn.execute(text(_LAST), {"who": decided_by}).one_or_none()
    if row is None:
        return None
    return LastAction(
        row.action_id, row.what, row.label, int(row.n), int(row.image_id), row.decided_at
    )


def undo_last(conn: Connection, *, decided_by: str) -> LastAction | None:
    """Remove the latest action of `decided_by`, every row of it; what was removed."""
    last = last_action(conn, decided_by=decided_by)
    if last is None:
        return None
    for table in ("label_corrections", "pair_decisions"):
        conn.execute(
            text(f"DELETE FROM {table} WHERE action_id = :action AND decided_by = :who"),
            {"action": last.action_id, "who": decided_by},
        )
    return last


def pair_history(conn: Connection, *, image_id: int) -> list[dict[str, Any]]:
    """Verdicts on pairs an image is part of, latest first (the item page's history)."""
    rows = conn.execute(
        text(
            "SELECT kind, decision, image_id, other_image_id, review_id, delisted_image_id, "
            "decided_by, decided_at FROM pair_decisions "
            "WHERE image_id = :image OR other_image_id = :image "
            "ORDER BY decided_at DESC, id DESC"
        ),
        {"image": image_id},
    )
    return [dict(r) for r in rows.mappings()]


def delisted(conn: Connection, *, image_id: int) -> dict[str, Any] | None:
    """Who delisted an image as a duplicate of which, and when; None if it is listed."""
    row = conn.execute(
        text(
            "SELECT CASE WHEN image_id = :image THEN other_image_id ELSE image_id END AS kept, "
            "decided_by, decided_at FROM pair_decisions "
            "WHERE delisted_image_id = :image AND decision = 'delist_one' LIMIT 1"
        ),
        {"image": image_id},
    ).one_or_none()
    return None if row is None else dict(row._mapping)
