"""Similarity search under the active model: the analyst's SQL text and the Python calls.

Every search goes through the `similar_images()` / `similar_to_vector()` SQL functions
(migration 0003), so Python and an analyst's psql get the same answer: they splice the
active model's id and dimension into their query so the model's HNSW index serves it,
and search a small merchant exactly through the B-tree on `images.merchant_id` (HNSW
applies a selective filter only after drawing candidates and can come back short).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import Connection, Executable, bindparam, text

from vitrine.db.schema import positive_int
from vitrine.db.types import Neighbour


def similar_sql(
    image_id: int, k: int = 10, *, merchant_id: str | None = None, label: str | None = None
) -> str:
    """The SQL an analyst types for "items like this one" (what `similar` runs), with
    the merchant and label filters as named arguments when given."""
    iid, kk = positive_int(image_id, "image_id"), positive_int(k, "k")
    named = [
        f"{name} => '{value.replace(chr(39), chr(39) * 2)}'"
        for name, value in (("p_merchant_id", merchant_id), ("p_label", label))
        if value is not None
    ]
    return f"SELECT * FROM similar_images({', '.join([str(iid), str(kk), *named])});"


_SIMILAR_IMAGES = text(
    "SELECT image_id, merchant_id, sku, uri, label, distance "
    "FROM similar_images(:image_id, :k, :merchant_id, :label)"
)
# The VECTOR type's bind processor turns the numpy array into pgvector's text form.
_SIMILAR_TO_VECTOR = text(
    "SELECT image_id, merchant_id, sku, uri, label, distance "
    "FROM similar_to_vector(CAST(:vec AS vector), :k, :merchant_id, :label)"
).bindparams(bindparam("vec", type_=VECTOR()))


def _neighbours(
    conn: Connection, stmt: Executable, params: dict[str, Any], max_distance: float | None
) -> list[Neighbour]:
    """The function's rows, those past `max_distance` (cosine) left out: a neighbour that
    far is not like the query, and a short list says so better than a filled one."""
    found = [
        Neighbour(
            image_id=int(row.image_id),
            merchant_id=row.merchant_id,
            sku=row.sku,
            uri=row.uri,
            label=row.label,
            distance=float(row.distance),
        )
        for row in conn.execute(stmt, params)
    ]
    return [n for n in found if max_distance is None or n.distance <= max_distance]


def similar(
    conn: Connection,
    *,
    image_id: int,
    k: int = 10,
    merchant_id: str | None = None,
    label: str | None = None,
    max_distance: float | None = None,
) -> list[Neighbour]:
    """The `k` nearest images to `image_id` under the active model, nearest first, none
    further than `max_distance` (cosine distance; None: no cut-off).

    Excludes the image itself; empty if it has no embedding for the active model. With
    `merchant_id` and/or `label`, only those images are candidates, and `k` come back
    whenever `k` match (`similar_images()` picks an exact or an index plan per call).
    No active model: a database error.
    """
    params = {"image_id": int(image_id), "k": int(k), "merchant_id": merchant_id, "label": label}
    return _neighbours(conn, _SIMILAR_IMAGES, params, max_distance)


def similar_to_vector(
    conn: Connection,
    *,
    embedding: npt.NDArray[np.floating[Any]] | Sequence[float],
    k: int = 10,
    merchant_id: str | None = None,
    label: str | None = None,
    max_distance: float | None = None,
) -> list[Neighbour]:
    """The `k` nearest images to an arbitrary vector under the active model, optionally
    within one merchant and/or label, none further than `max_distance`.

    `embedding` is bound as a float32 numpy array (no copy when it already is one);
    a size other than the active model's is a database error.
    """
    vec = np.asarray(embedding, dtype=np.float32)
    if vec.ndim != 1:
        raise ValueError(f"embedding must be one vector (1-d), got shape {vec.shape}")
    params = {"vec": vec, "k": int(k), "merchant_id": merchant_id, "label": label}
    return _neighbours(conn, _SIMILAR_TO_VECTOR, params, max_distance)
