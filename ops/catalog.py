"""The read-only questions: what is stored, which items look alike, which servers run.

Everything here only reads, so it works with a SELECT-only database role.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from vitrine.db import repository
from vitrine.db.types import ModelRow, Neighbour
from vitrine.ops.context import Context
from vitrine.ops.errors import UserError
from vitrine.ops.photo_search import PhotoEmbedder
from vitrine.ops.pictures import neighbour_sheet, photo_sheet
from vitrine.ops.services import services
from vitrine.pipeline.types import UNKNOWN_LABEL as UNKNOWN
from vitrine.pipeline.types import Prediction


@dataclass(frozen=True)
class SimilarReport:
    image_id: int
    sql: str
    neighbours: list[Neighbour]
    sheet: Path | None
    note: str | None = None  # why fewer than k came back ("no close match ...")


@dataclass(frozen=True)
class PhotoSearch:
    photo: Path
    model: str
    label: str  # "unknown" when the photo is none of the model's categories
    confidence: float
    neighbours: list[Neighbour]
    sheet: Path | None
    note: str | None = None
    unknown_score: float | None = None


def no_close_match(nearest: float | None, cutoff: float) -> str:
    """Why a search returned nothing although the catalogue has images."""
    where = f"; the nearest is at {nearest:.2f}" if nearest is not None else ""
    return f"no close match within distance {cutoff:g} (VITRINE_SIMILAR_MAX_DISTANCE){where}"


UNKNOWN_NOTE = (
    "the photo is none of the model's categories (unknown): no close match in the catalogue"
)


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
    """The k images nearest to `image_id` under the active model, within `filters` and
    `VITRINE_SIMILAR_MAX_DISTANCE` (fewer, with a note, when fewer are that close)."""
    engine = ctx.engine()
    cutoff = ctx.settings.similar_max_distance
    note = None
    with engine.connect() as conn:
        check_label(repository.active_model(conn), filters)
        neighbours = repository.similar(
            conn,
            image_id=image_id,
            k=k,
            merchant_id=filters.merchant_id,
            label=filters.label,
            max_distance=cutoff,
        )
        if not neighbours:
            nearest = repository.similar(
                conn, image_id=image_id, k=1, merchant_id=filters.merchant_id, label=filters.label
            )
            if nearest:
                note = no_close_match(nearest[0].distance, cutoff)
            elif filters != NO_FILTERS and repository.similar(conn, image_id=image_id, k=1):
                raise UserError(f"no other image matches {filters.describe()}")
            else:
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
    return SimilarReport(image_id, sql, neighbours, sheet, note)


def check_label(active: ModelRow | None, filters: SearchFilters) -> None:
    """A label the active model does not have (nor "unknown") is a typo: say which there are."""
    known = (*active.labels, UNKNOWN) if active is not None else ()
    if filters.label is not None and active is not None and filters.label not in known:
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
    active = embedder.model_row()
    check_label(active, filters)
    try:
        embedded = embedder.embed(data, active=active)
    except UserError as exc:
        raise UserError(f"{photo}: {exc}") from None
    prediction = embedded.prediction
    with ctx.engine().connect() as conn:
        neighbours, note = close_neighbours(
            conn, prediction, k=k, filters=filters, cutoff=ctx.settings.similar_max_distance
        )
    label = shown_label(prediction)
    caption = f"{photo.name}\n{label} {prediction.confidence:.2f}"
    sheet = photo_sheet(data, caption, neighbours, png) if png else None
    return PhotoSearch(
        photo,
        active.key,
        label,
        prediction.confidence,
        neighbours,
        sheet,
        note,
        prediction.unknown_score,
    )


def shown_label(prediction: Prediction) -> str:
    """What people read for a prediction: "unknown" when flagged, else its label."""
    return UNKNOWN if prediction.unknown else prediction.label


def close_neighbours(
    conn: Connection, prediction: Prediction, *, k: int, filters: SearchFilters, cutoff: float
) -> tuple[list[Neighbour], str | None]:
    """A photo's neighbours for a search by photo: none when it is none of the model's
    categories, else those within `cutoff`; and why there are none, if so."""
    if prediction.unknown:
        return [], UNKNOWN_NOTE
    found = repository.similar_to_vector(
        conn,
        embedding=prediction.embedding,
        k=k,
        merchant_id=filters.merchant_id,
        label=filters.label,
    )
    close = [n for n in found if n.distance <= cutoff]
    note = no_close_match(found[0].distance, cutoff) if found and not close else None
    return close, note
