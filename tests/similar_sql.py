"""The similarity query spelled out in plain SQL: the tests' oracle for `similar_images()`.

vitrine itself only calls the SQL functions of migration 0002 and later; this is the
text those functions build, kept here so the tests can compare plan and answers.
"""

from __future__ import annotations

from vitrine.db.schema import positive_int


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
