"""Whole-catalog loads for benchmarks and migrations: COPY in, index after.

Loading a million rows one upsert at a time takes hours; COPY takes seconds, and an
HNSW index built once over the loaded rows is several times faster than one maintained
row by row. The index build here is `CREATE INDEX CONCURRENTLY`, so live writes to
`embeddings` (other models' results, a running fleet) go on while it builds.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from vitrine.db.schema import hnsw_index_ddl, hnsw_index_name

# The build holds the graph in memory: 1M x 128-d needs about 0.8 GB (`docs/sql.md`);
# one parallel helper matches a 2-core machine and is harmless on a larger one.
BUILD_MEMORY = "2GB"


def copy_catalog(
    conn: Connection,
    *,
    model_id: int,
    merchants: Sequence[str],
    labels: Sequence[str],
    label_indices: Sequence[int],
    confidences: Sequence[float],
) -> list[int]:
    """COPY one `done` image (uri `bench://<n>`, sku `sku-<n>`) and its prediction per
    entry; return the new image ids in order. Embeddings follow with `copy_embeddings`."""
    n = len(merchants)
    if not (n == len(labels) == len(label_indices) == len(confidences)):
        raise ValueError("merchants, labels, label_indices and confidences differ in length")
    first = (
        conn.execute(text("SELECT nextval('images_id_seq') FROM generate_series(1, :n)"), {"n": n})
        .scalars()
        .all()
    )
    ids = [int(i) for i in first]
    driver = conn.connection.driver_connection
    if driver is None:  # pragma: no cover - only for detached connections
        raise RuntimeError("connection has no DBAPI connection")
    statement = "COPY images"
    try:
        with driver.cursor() as cur:
            with cur.copy(
                "COPY images (id, merchant_id, uri, sku, status, processed_at) FROM STDIN"
            ) as copy:
                for image_id, merchant in zip(ids, merchants, strict=True):
                    copy.write_row(
                        (
                            image_id,
                            merchant,
                            f"bench://{image_id}",
                            f"sku-{image_id}",
                            "done",
                            "now",
                        )
                    )
            statement = "COPY predictions"
            with cur.copy(
                "COPY predictions (image_id, model_id, label, label_index, confidence, top_k) "
                "FROM STDIN"
            ) as copy:
                for row in zip(ids, labels, label_indices, confidences, strict=True):
                    image_id, label, index, confidence = row
                    copy.write_row((image_id, model_id, label, index, confidence, "[]"))
    except psycopg.Error as exc:
        raise DBAPIError.instance(statement, None, exc, psycopg.Error) from exc
    return ids


def drop_hnsw_index_concurrently(engine: Engine, *, model_id: int) -> None:
    """Drop model `model_id`'s HNSW index without blocking reads or writes of `embeddings`
    (before a bulk load into a model that serves no searches yet; rebuild it after with
    `build_hnsw_index_concurrently`)."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f"DROP INDEX CONCURRENTLY IF EXISTS {hnsw_index_name(model_id)}"))


def build_hnsw_index_concurrently(engine: Engine, *, model_id: int, embedding_dim: int) -> None:
    """(Re)build model `model_id`'s HNSW index without blocking writes to `embeddings`.

    Drops the index first if it exists (`DROP INDEX CONCURRENTLY`), so call it after a
    bulk load into a model that is not serving searches yet, e.g. a re-embedding
    backfill's new model. CONCURRENTLY cannot run inside a transaction: this takes its
    own autocommit connection.
    """
    ddl = hnsw_index_ddl(model_id, embedding_dim).replace(
        "CREATE INDEX IF NOT EXISTS", "CREATE INDEX CONCURRENTLY"
    )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f"DROP INDEX CONCURRENTLY IF EXISTS {hnsw_index_name(model_id)}"))
        conn.execute(text(f"SET maintenance_work_mem = '{BUILD_MEMORY}'"))
        conn.execute(text("SET max_parallel_maintenance_workers = 1"))
        conn.execute(text(ddl))
        # VACUUM sets the visibility map, so the covering merchant index is read by
        # index-only scans at once, not after autovacuum comes round.
        conn.execute(text("VACUUM (ANALYZE) images, predictions, embeddings"))
