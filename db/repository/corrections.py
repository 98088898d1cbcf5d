"""The review desk's decisions as training data: the latest correction per image.

A merchandiser may approve an item and later relabel it, or two may disagree; the table
`label_corrections` (migration 0010) keeps every decision, and the latest one per image
(by `decided_at`, then by id for decisions in the same instant) is the label that counts.
Written as SQL text rather than against `vitrine.db.schema`, so it reads the table whichever
module declares it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, text


@dataclass(frozen=True)
class CorrectedImage:
    """One image's latest decision, with the uri its bytes are read from."""

    image_id: int
    uri: str
    action: str  # "approve" or "relabel"
    label: str
    previous_label: str | None
    model_id: int | None
    decided_at: datetime


_LATEST = text(
    """
    SELECT DISTINCT ON (c.image_id)
           c.image_id, i.uri, c.action, c.label, c.previous_label, c.model_id, c.decided_at
      FROM label_corrections c JOIN images i ON i.id = c.image_id
     ORDER BY c.image_id, c.decided_at DESC, c.id DESC
    """
)


def latest_corrections(conn: Connection) -> list[CorrectedImage]:
    """Every corrected image's latest decision, in image id order."""
    return [
        CorrectedImage(
            image_id=int(row.image_id),
            uri=str(row.uri),
            action=str(row.action),
            label=str(row.label),
            previous_label=None if row.previous_label is None else str(row.previous_label),
            model_id=None if row.model_id is None else int(row.model_id),
            decided_at=row.decided_at,
        )
        for row in conn.execute(_LATEST)
    ]


__all__ = ["CorrectedImage", "latest_corrections"]
