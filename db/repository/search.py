"""Similarity search under the active model: the analyst's SQL text and the Python calls.

Unfiltered searches go through the `similar_images()` / `similar_to_vector()` SQL
functions, which splice the active model's id and dimension into their query so the
model's HNSW index serves them. A search within one merchant does not: HNSW applies a
selective filter only after its candidate list is drawn and can return too few rows,
while an exact scan over one merchant's images is both correct and cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import Connection, Executable, Select, and_, bindparam, select, text

from db.repository._shared import active_model_id
from db.schema import embeddings, images, positive_int, predictions
from db.types import Neighbour


def similar_sql(image_id: int, k: int = 10, *, merchant_id: str | None = None) -> str:
    """The SQL an analyst types for "items like this one" (what `similar` runs).

    With `merchant_id`, the exact search within that merchant's images.
    """
    iid, kk = positive_int(image_id, "image_id"), positive_int(k, "k")
    if merchant_id is None:
        return f"SELECT * FROM similar_images({iid}, {kk});"
    merchant = merchant_id.replace("'", "''")
    return (
        "SELECT e.image_id, p.label, e.embedding <=> q.embedding AS distance\n"
        "  FROM embeddings q JOIN embeddings e ON e.model_id = q.model_id\n"
        "  JOIN images i ON i.id = e.image_id\n"
        "  LEFT JOIN predictions p ON p.image_id = e.image_id AND p.model_id = e.model_id\n"
        f" WHERE q.model_id = (SELECT id FROM active_model) AND q.image_id = {iid}\n"
        f"   AND e.image_id <> {iid} AND i.merchant_id = '{merchant}'\n"
        f" ORDER BY distance LIMIT {kk};"
    )


def similar_raw_sql(*, model_id: int, embedding_dim: int, image_id: int, k: int = 10) -> str:
    """The same query without the function, spelled so the model's HNSW index is used.

    The model id and dimension must be literals matching the index
    `embeddings_hnsw_m<model_id>`; `similar_images()` builds exactly this text.
    """
    mid = positive_int(model_id, "model_id")
    dim = positive_int(embedding_dim, "embedding_dim")
    iid = positive_int(image_id, "image_id")
    kk = positive_int(k, "k")
    query = (
        f"(SELECT embedding::vector({dim}) FROM embeddings "
        f"WHERE image_id = {iid} AND model_id = {mid})"
    )
    return (
        "SELECT e.image_id, i.merchant_id, i.sku, i.uri, p.label,\n"
        f"       e.embedding::vector({dim}) <=> {query} AS distance\n"
        "  FROM embeddings e\n"
        "  JOIN images i ON i.id = e.image_id\n"
        f"  LEFT JOIN predictions p ON p.image_id = e.image_id AND p.model_id = {mid}\n"
        f" WHERE e.model_id = {mid} AND e.image_id <> {iid}\n"
        f" ORDER BY e.embedding::vector({dim}) <=> {query}\n"
        f" LIMIT {kk};"
    )


_SIMILAR_IMAGES = text(
    "SELECT image_id, merchant_id, sku, uri, label, distance FROM similar_images(:image_id, :k)"
)
# The VECTOR type's bind processor turns the numpy array into pgvector's text form.
_SIMILAR_TO_VECTOR = text(
    "SELECT image_id, merchant_id, sku, uri, label, distance "
    "FROM similar_to_vector(CAST(:vec AS vector), :k)"
).bindparams(bindparam("vec", type_=VECTOR()))


def _neighbours(conn: Connection, stmt: Executable, params: dict[str, Any]) -> list[Neighbour]:
    return [
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


def _within_merchant_query() -> Select[Any]:
    """Exact k-NN among one merchant's images; binds image_id, merchant_id and k."""
    q, e = embeddings.alias("q"), embeddings.alias("e")
    p = predictions
    # Unsized `vector` on both sides and a non-literal model id: no HNSW index can
    # match, so this is the exact scan the module docstring describes.
    distance = e.c.embedding.cosine_distance(q.c.embedding).label("distance")
    joined = (
        q.join(e, e.c.model_id == q.c.model_id)
        .join(images, images.c.id == e.c.image_id)
        .outerjoin(p, and_(p.c.image_id == e.c.image_id, p.c.model_id == e.c.model_id))
    )
    return (
        select(e.c.image_id, images.c.merchant_id, images.c.sku, images.c.uri, p.c.label, distance)
        .select_from(joined)
        .where(
            q.c.model_id == active_model_id(),
            q.c.image_id == bindparam("image_id"),
            e.c.image_id != bindparam("image_id"),
            images.c.merchant_id == bindparam("merchant_id"),
        )
        .order_by(distance, e.c.image_id)
        .limit(bindparam("k"))
    )


_SIMILAR_WITHIN_MERCHANT = _within_merchant_query()


def similar(
    conn: Connection, *, image_id: int, k: int = 10, merchant_id: str | None = None
) -> list[Neighbour]:
    """The `k` nearest images to `image_id` under the active model, nearest first.

    Excludes the image itself; empty if it has no embedding for the active model.
    With `merchant_id`, only that merchant's images are candidates, ranked by exact
    cosine distance: exactly `k` come back whenever it has `k` other embedded images.
    No active model: a database error from `similar_images()` without `merchant_id`,
    `LookupError` with it (the exact query has no function to raise it).
    """
    params: dict[str, Any] = {"image_id": int(image_id), "k": int(k)}
    if merchant_id is None:
        return _neighbours(conn, _SIMILAR_IMAGES, params)
    if params["k"] < 1:
        return []
    params["merchant_id"] = merchant_id
    found = _neighbours(conn, _SIMILAR_WITHIN_MERCHANT, params)
    if not found and conn.execute(select(active_model_id())).scalar() is None:
        raise LookupError("similar: no active model (see the models table)")
    return found


def similar_to_vector(
    conn: Connection, *, embedding: npt.NDArray[np.floating[Any]] | Sequence[float], k: int = 10
) -> list[Neighbour]:
    """The `k` nearest images to an arbitrary vector under the active model.

    `embedding` is bound as a float32 numpy array (no copy when it already is one);
    a size other than the active model's is a database error.
    """
    vec = np.asarray(embedding, dtype=np.float32)
    if vec.ndim != 1:
        raise ValueError(f"embedding must be one vector (1-d), got shape {vec.shape}")
    return _neighbours(conn, _SIMILAR_TO_VECTOR, {"vec": vec, "k": int(k)})
