"""Contact sheets of stored images and their neighbours, read back through their URIs
under the workers' rules (`vitrine.ops.stored_photos`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image
from sqlalchemy import Engine

from vitrine.db import repository
from vitrine.db.types import Neighbour
from vitrine.ops.stored_photos import PhotoUnavailable, decode_photo, read_stored
from vitrine.pipeline.evaluation.report import Tile, contact_sheet
from vitrine.settings import get_settings

_MISSING = (200, 200, 200)
#: JPEGs are decoded at reduced scale, keeping at least this many pixels a side.
_TILE_DRAFT = 256


def _load(uri: str) -> Image.Image:
    return _picture(lambda: read_stored(get_settings(), uri))


def _picture(read: Callable[[], bytes]) -> Image.Image:
    try:
        return decode_photo(read(), get_settings().image_limits, draft_size=_TILE_DRAFT)
    except PhotoUnavailable:  # a picture must not fail because one file went missing
        return Image.new("RGB", (64, 64), _MISSING)


def neighbour_sheet(
    engine: Engine,
    image_ids: Sequence[int],
    k: int,
    png: Path,
    *,
    merchant_id: str | None = None,
    label: str | None = None,
) -> Path:
    """One row per image: the image, then its k nearest neighbours with their distances."""
    rows: list[tuple[Tile, list[Tile]]] = []
    with engine.connect() as conn:
        about = repository.image_summaries(conn, image_ids=list(image_ids))
        for image_id in image_ids:
            neighbours = repository.similar(
                conn, image_id=image_id, k=k, merchant_id=merchant_id, label=label
            )
            query = about.get(image_id)
            rows.append(
                (
                    (_load(query.uri if query else ""), f"#{image_id} {query and query.label}"),
                    _neighbour_tiles(neighbours),
                )
            )
    png.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(rows).save(png)
    return png


def photo_sheet(photo: bytes, caption: str, neighbours: Sequence[Neighbour], png: Path) -> Path:
    """One row: a photo that need not be in the catalog (its bytes, as the user gave them:
    it may lie outside the workers' file roots), then its nearest catalog items."""
    query: Tile = (_picture(lambda: photo), caption)
    png.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet([(query, _neighbour_tiles(neighbours))]).save(png)
    return png


def _neighbour_tiles(neighbours: Sequence[Neighbour]) -> list[Tile]:
    return [(_load(n.uri), f"#{n.image_id} {n.label}\nd={n.distance:.3f}") for n in neighbours]
