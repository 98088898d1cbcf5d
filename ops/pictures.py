"""Contact sheets of stored images and their neighbours, read back through their URIs."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image
from sqlalchemy import Engine

from db import repository
from db.types import Neighbour
from pipeline.report import Tile, contact_sheet
from worker.fetch import fetch_bytes
from worker.settings import get_settings

_MISSING = (200, 200, 200)


def _load(uri: str) -> Image.Image:
    return _picture(lambda: fetch_bytes(uri, get_settings().source_policy))


def _picture(read: Callable[[], bytes]) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(read()))
        img.draft("RGB", (256, 256))
        img.load()
        return img
    except Exception:  # a picture must not fail because one file went missing
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
