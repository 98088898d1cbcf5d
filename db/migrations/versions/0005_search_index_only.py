"""Per-merchant exact search reads only the covering index.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28

Measured with 10,000 vectors per merchant (docs/sql.md, "Search at catalog scale"):

- The covering B-tree of 0003, `(model_id, merchant_id) INCLUDE (embedding)`, lacked
  `image_id`, which the exact search returns, so every candidate row was fetched from
  the table as well: an index scan touching ~8,000 buffers, 12.9 ms. With `image_id`
  included it is an index-only scan of ~770 buffers, 6.5-7 ms.
- Deciding whether a merchant is small enough to search exactly counted its embeddings
  through that same wide index (~6 ms); it now counts the merchant's images through the
  narrow `(merchant_id, uri)` unique index (~0.5 ms). Images are never fewer than one
  model's embeddings, so the exact path is still taken only when it is small enough.
- The search runs without parallel workers: on a small machine two workers were
  planned for the merchant's scan and made it slower, not faster.

The index is rebuilt inside the migration's transaction (about 10 s per million
embeddings); writes to `embeddings` wait for it.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from vitrine.db.migrate import revision_module

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "embeddings_model_id_merchant_id_idx"
_COUNT_EMBEDDINGS = """SELECT 1 FROM embeddings e
                 WHERE e.model_id = v_model_id AND e.merchant_id = p_merchant_id"""
_COUNT_IMAGES = """SELECT 1 FROM images i
                 WHERE i.merchant_id = p_merchant_id"""
# A role that is not a superuser may name `hnsw.*` settings (the function's SET clause)
# only once pgvector's library is loaded in its session; using the type loads it. Done
# here too because `alembic downgrade` may be run directly, without `vitrine.db.migrate`.
LOAD_PGVECTOR = "SELECT '[1]'::vector"
_SERIAL = "SET hnsw.ef_search = 40\nSET max_parallel_workers_per_gather = 0"


def knn_function(*, index_only: bool) -> str:
    """0003's `vitrine_knn`, as CREATE OR REPLACE, with or without this revision's changes."""
    previous = revision_module("0003_search_and_hashes.py")
    iterative = revision_module("0001_initial.py").iterative_scan_clause("relaxed_order")
    text = previous.KNN.replace("{ITERATIVE_SCAN}", iterative)
    text = text.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
    if index_only:
        assert _COUNT_EMBEDDINGS in text and "SET hnsw.ef_search = 40" in text
        text = text.replace(_COUNT_EMBEDDINGS, _COUNT_IMAGES)
        text = text.replace("SET hnsw.ef_search = 40", _SERIAL, 1)
    return str(text)


def upgrade() -> None:
    op.execute(LOAD_PGVECTOR)
    op.execute(f"DROP INDEX {INDEX}")
    op.execute(
        f"CREATE INDEX {INDEX} ON embeddings (model_id, merchant_id) INCLUDE (image_id, embedding)"
    )
    op.execute(knn_function(index_only=True))


def downgrade() -> None:
    op.execute(LOAD_PGVECTOR)
    op.execute(f"DROP INDEX {INDEX}")
    op.execute(f"CREATE INDEX {INDEX} ON embeddings (model_id, merchant_id) INCLUDE (embedding)")
    op.execute(knn_function(index_only=False))
