"""What the API and the review desk both answer: an image as people read it, and a
search by photo. The routes (`vitrine.api.routes`) and the desk's pages
(`vitrine.api.desk`) call these; neither imports the other."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from vitrine.api.auth import context, merchant_for, scoped
from vitrine.api.metrics import SEARCHES
from vitrine.api.public import public_text, public_uri
from vitrine.api.schemas import ImageOut, NeighbourOut, SearchFields, SearchOut
from vitrine.db.types import ApiClient
from vitrine.ops.catalog import SearchFilters, check_label, close_neighbours, shown_label
from vitrine.ops.errors import UserError
from vitrine.ops.photo_search import PhotoEmbedder
from vitrine.settings import Settings


def image_out(settings: Settings, row: dict[str, Any]) -> ImageOut:
    """`repository.image_detail`'s row as the API shows it (also the desk's item page)."""
    known = {str(label).lower() for label in row.pop("model_labels") or ()}
    declared = row["declared_label"]
    return ImageOut(
        **{
            **row,
            "uri": public_uri(settings, row["uri"]),
            "error": public_text(settings, row["error"]),
            "declared_label_known": None if not declared else declared.strip().lower() in known,
        }
    )


def search_photo(
    request: Request, caller: ApiClient, photo: bytes, fields: SearchFields
) -> SearchOut:
    """Embed `photo` with the active model and find its neighbours (also the review
    desk's search by dropped photo)."""
    ctx = context(request)
    merchant_id = fields.merchant_id
    if caller.merchant_id is not None:
        merchant_id = merchant_for(caller, merchant_id)
    embedder: PhotoEmbedder = request.app.state.embedder
    active = embedder.model_row()
    check_label(active, SearchFilters(merchant_id, fields.label))
    try:
        embedded = embedder.embed(photo, active=active)
    except UserError as exc:
        raise UserError(f"not a usable photo: {exc}") from None
    prediction = embedded.prediction
    cutoff = ctx.settings.similar_max_distance
    with scoped(ctx, caller) as conn:
        neighbours, note = close_neighbours(
            conn,
            prediction,
            k=fields.k,
            filters=SearchFilters(merchant_id, fields.label),
            cutoff=cutoff,
        )
    SEARCHES.inc()
    return SearchOut(
        model=active.key,
        label=shown_label(prediction),
        confidence=round(prediction.confidence, 6),
        unknown_score=prediction.unknown_score,
        max_distance=cutoff,
        neighbours=NeighbourOut.listed(neighbours, lambda uri: public_uri(ctx.settings, uri)),
        note=note,
    )
