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
from ops.photo_search import PhotoEmbedder
from ops.pictures import neighbour_sheet, photo_sheet
from ops.services import services


@dataclass(frozen=True)
class SimilarReport:
    image_id: int
    sql: str
    neighbours: list[Neighbour]
    sheet: Path | None


@dataclass(frozen=True)
class PhotoSearch:
    photo: Path
    model: str
    label: str
    confidence: float
    neighbours: list[Neighbour]
    sheet: Path | None


@dataclass(frozen=True)
class StatusReport:
    images: dict[str, int]
    labels: list[tuple[str, int]]
    models: list[ModelRow]
    services: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class SearchFilters:
    """Only this merchant's and/or this label's images are candidates (None: any)."""

    merchant_id: str | None = None
    label: str | None = None

    def describe(self) -> str:
        parts = [f"merchant {self.merchant_id!r}"] if self.merchant_id is not None else []
        parts += [f"label {self.label!r}"] if self.label is not None else []
        return " and ".join(parts)


NO_FILTERS = SearchFilters()


def similar(
    ctx: Context,
    *,
    image_id: int,
    k: int,
    png: Path | None = None,
    filters: SearchFilters = NO_FILTERS,
) -> SimilarReport:
    """The k images nearest to `image_id` under the active model, within `filters`."""
    engine = ctx.engine()
    with engine.connect() as conn:
        check_label(repository.active_model(conn), filters)
        neighbours = repository.similar(
            conn, image_id=image_id, k=k, merchant_id=filters.merchant_id, label=filters.label
        )
        if not neighbours and filters != NO_FILTERS:
            if repository.similar(conn, image_id=image_id, k=1):
                raise UserError(f"no other image matches {filters.describe()}")
    if not neighbours:
        raise UserError(
            f"image {image_id} has no embedding under the active model "
            "(is it done? `vitrine status` counts images by status)"
        )
    sheet = (
        neighbour_sheet(
            engine, [image_id], k, png, merchant_id=filters.merchant_id, label=filters.label
        )
        if png
        else None
    )
    sql = repository.similar_sql(image_id, k, merchant_id=filters.merchant_id, label=filters.label)
    return SimilarReport(image_id, sql, neighbours, sheet)


def check_label(active: ModelRow | None, filters: SearchFilters) -> None:
    """A label the active model does not have is a typo: say which labels there are."""
    if filters.label is not None and active is not None and filters.label not in active.labels:
        raise UserError(
            f"label {filters.label!r} is not one of the active model's: " + ", ".join(active.labels)
        )


def status(ctx: Context) -> StatusReport:
    """Images by status, labels under the active model, models, servers."""
    with ctx.engine().connect() as conn:
        images = repository.status_counts(conn)
        labels = repository.label_counts(conn)
        models = repository.list_models(conn)
    return StatusReport(images, labels, models, services(ctx.settings))


def similar_to_photo(
    ctx: Context,
    *,
    photo: Path,
    k: int,
    png: Path | None = None,
    filters: SearchFilters = NO_FILTERS,
) -> PhotoSearch:
    """The k catalog images nearest to a photo that need not be in the catalog (a shopper's,
    a merchandiser's): embedded here through the workers' own preprocessing and the active
    model, then searched with `similar_to_vector()`."""
    try:
        data = photo.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {photo}: {exc.strerror or exc}") from None
    embedder = PhotoEmbedder(ctx)
    active = embedder.active_model()
    check_label(active, filters)
    try:
        embedded = embedder.embed(data, active=active)
    except UserError as exc:
        raise UserError(f"{photo}: {exc}") from None
    prediction = embedded.prediction
    with ctx.engine().connect() as conn:
        neighbours = repository.similar_to_vector(
            conn,
            embedding=prediction.embedding,
            k=k,
            merchant_id=filters.merchant_id,
            label=filters.label,
        )
    caption = f"{photo.name}\n{prediction.label} {prediction.confidence:.2f}"
    sheet = photo_sheet(data, caption, neighbours, png) if png else None
    return PhotoSearch(
        photo, active.key, prediction.label, prediction.confidence, neighbours, sheet
    )
