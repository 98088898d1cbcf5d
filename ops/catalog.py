"""The read-only questions: what is stored, which items look alike, which servers run.

Everything here only reads, so it works with a SELECT-only database role.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from db import repository
from db.types import ModelRow, Neighbour
from ops.context import Context
from ops.errors import UserError
from ops.pictures import neighbour_sheet
from ops.services import services


@dataclass(frozen=True)
class SimilarReport:
    image_id: int
    sql: str
    neighbours: list[Neighbour]
    sheet: Path | None


@dataclass(frozen=True)
class StatusReport:
    images: dict[str, int]
    labels: list[tuple[str, int]]
    models: list[ModelRow]
    services: dict[str, dict[str, Any]]


def similar(ctx: Context, *, image_id: int, k: int, png: Path | None = None) -> SimilarReport:
    """The k images nearest to `image_id` under the active model (its HNSW index)."""
    engine = ctx.engine()
    with engine.connect() as conn:
        neighbours = repository.similar(conn, image_id=image_id, k=k)
    if not neighbours:
        raise UserError(
            f"image {image_id} has no embedding under the active model "
            "(is it done? `vitrine status` counts images by status)"
        )
    sheet = neighbour_sheet(engine, [image_id], k, png) if png else None
    return SimilarReport(image_id, repository.similar_sql(image_id, k), neighbours, sheet)


def status(ctx: Context) -> StatusReport:
    """Images by status, labels under the active model, models, servers."""
    with ctx.engine().connect() as conn:
        images = repository.status_counts(conn)
        labels = repository.label_counts(conn)
        models = repository.list_models(conn)
    return StatusReport(images, labels, models, services(ctx.settings))
