"""Listing-photo quality: the measurements per image (`image_quality`) and what fails.

`save_results` writes the measurements in the transaction that stores an image's results
(a re-upload of known bytes copies them, as it copies the prediction); `quality_issues`
reads the view of the same name, whose thresholds are PostgreSQL settings read at query
time (migration 0007, docs/sql.md "Listing-photo quality").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, func, text
from sqlalchemy.dialects.postgresql import insert as pg_insert

from vitrine.db.schema import image_quality
from vitrine.pipeline.types import ImageQuality

MEASURES = tuple(f.name for f in dataclasses.fields(ImageQuality))

_insert = pg_insert(image_quality)
# Executed with a list of parameter dicts; RETURNING makes it one multi-row INSERT.
_UPSERT_QUALITY = _insert.on_conflict_do_update(
    index_elements=[image_quality.c.image_id],
    set_={**{m: _insert.excluded[m] for m in MEASURES}, "measured_at": func.now()},
).returning(image_quality.c.image_id)


def save_quality(conn: Connection, *, measures: Mapping[int, ImageQuality]) -> None:
    """Upsert `{image_id: measurements}` (a re-processed image gets its new figures)."""
    if not measures:
        return
    rows = [
        {"image_id": image_id, **dataclasses.asdict(measures[image_id])}
        for image_id in sorted(measures)  # one lock order for concurrent batches
    ]
    conn.execute(_UPSERT_QUALITY, rows).close()


def quality_of(row: Any) -> ImageQuality | None:
    """The measurements in a row that selected `MEASURES` (None: not measured)."""
    if row.longest_side_px is None:
        return None
    return ImageQuality(**{m: getattr(row, m) for m in MEASURES})


def quality_issues(
    conn: Connection, *, image_ids: Sequence[int]
) -> dict[int, tuple[list[str], str]]:
    """`{image_id: (reason codes, human text)}` from view `quality_issues` for those of
    `image_ids` that fail a rule under the thresholds this session sees."""
    if not image_ids:
        return {}
    rows = conn.execute(
        text("SELECT image_id, reasons, details FROM quality_issues WHERE image_id = ANY(:ids)"),
        {"ids": [int(i) for i in image_ids]},
    )
    return {int(r.image_id): (list(r.reasons), str(r.details)) for r in rows}


__all__ = ["MEASURES", "quality_issues", "quality_of", "save_quality"]
