"""Measuring pgvector's HNSW index against exact search, on throw-away temp tables.

The gallery and queries are loaded with binary COPY into session-local tables, the same
index type and operator class as `embeddings` is built on them, and one LATERAL query
asks for every query's neighbours, so the numbers are what analysts' SQL would return.
"""

from __future__ import annotations

import numpy as np
from pgvector import Vector
from sqlalchemy import Connection

from vitrine.db.engine import register_vector_types


def _copy(
    cur: object, table: str, ids: np.ndarray, labels: np.ndarray, vectors: np.ndarray
) -> None:
    sql = f"COPY {table} (id, label, embedding) FROM STDIN WITH (FORMAT BINARY)"
    with cur.copy(sql) as copy:  # type: ignore[attr-defined]
        copy.set_types(["int4", "int4", "vector"])
        for i, label, vec in zip(ids, labels, vectors, strict=True):
            copy.write_row((int(i), int(label), Vector(vec)))


def hnsw_neighbour_labels(
    conn: Connection,
    *,
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    queries: np.ndarray,
    k: int,
    ef_search: int = 40,
    m: int = 16,
    ef_construction: int = 64,
) -> np.ndarray:
    """Labels of each query's k nearest gallery rows as the HNSW index returns them."""
    driver = conn.connection.driver_connection
    assert driver is not None
    register_vector_types(driver)
    dim = gallery.shape[1]
    with driver.cursor() as cur:
        cur.execute("SET LOCAL maintenance_work_mem = '512MB'")
        cur.execute(f"SET LOCAL hnsw.ef_search = {int(ef_search)}")
        for table in ("_eval_gallery", "_eval_queries"):
            cur.execute(
                f"CREATE TEMP TABLE {table} (id int, label int, embedding vector({dim})) "
                "ON COMMIT DROP"
            )
        _copy(cur, "_eval_gallery", np.arange(len(gallery)), gallery_labels, gallery)
        _copy(cur, "_eval_queries", np.arange(len(queries)), np.zeros(len(queries), int), queries)
        cur.execute(
            "CREATE INDEX ON _eval_gallery USING hnsw (embedding vector_cosine_ops) "
            f"WITH (m = {int(m)}, ef_construction = {int(ef_construction)})"
        )
        cur.execute("ANALYZE _eval_gallery")
        cur.execute(
            "SELECT q.id, n.label FROM _eval_queries q CROSS JOIN LATERAL ("
            "  SELECT g.label FROM _eval_gallery g"
            "  ORDER BY g.embedding <=> q.embedding LIMIT %s) n ORDER BY q.id",
            (k,),
        )
        rows = cur.fetchall()
    out = np.full((len(queries), k), -1, dtype=np.int64)
    fill = np.zeros(len(queries), dtype=np.int64)
    for qid, label in rows:
        out[qid, fill[qid]] = label
        fill[qid] += 1
    return out
