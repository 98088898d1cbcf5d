"""Initial schema: models, images, predictions, embeddings, analyst views and functions.

Revision ID: 0001
Revises:
Create Date: 2026-11-28

The tables are spelled out here rather than created from `vitrine.db.schema.metadata`: a
migration is a frozen record of one step, the metadata describes the latest state.

Per-model HNSW indexes are not created here; `vitrine.db.repository.register_model` creates one
per model because each model has its own embedding dimension:

    CREATE INDEX embeddings_hnsw_m<id> ON embeddings
        USING hnsw ((embedding::vector(<dim>)) vector_cosine_ops) WHERE model_id = <id>

The analyst functions splice the active model's id and dimension into their query text
(plpgsql `EXECUTE format(...)`) so that the planner sees exactly that index's
expression and predicate; a query that uses a parameter or subquery for the model id
cannot prove the partial predicate and falls back to a sequential scan.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op
from pgvector.sqlalchemy import VECTOR
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TSTZ = sa.DateTime(timezone=True)

# Shared body of the two similarity functions. %1$s = dimension, %2$s = model id (both
# integers read from `models`, so splicing them is safe); $1 = query vector,
# $2 = image id to exclude (NULL: exclude nothing), $3 = k.
_KNN_QUERY = """
SELECT e.image_id, i.merchant_id, i.sku, i.uri, p.label,
       e.embedding::vector(%1$s) <=> $1 AS distance
  FROM embeddings e
  JOIN images i ON i.id = e.image_id
  LEFT JOIN predictions p ON p.image_id = e.image_id AND p.model_id = %2$s
 WHERE e.model_id = %2$s
   AND e.image_id IS DISTINCT FROM $2
 ORDER BY e.embedding::vector(%1$s) <=> $1
 LIMIT $3
"""

SIMILAR_IMAGES = f"""
CREATE FUNCTION similar_images(p_image_id bigint, p_k integer DEFAULT 10)
RETURNS TABLE (image_id bigint, merchant_id text, sku text, uri text, label text,
               distance double precision)
LANGUAGE plpgsql STABLE
{{ITERATIVE_SCAN}}
AS $fn$
#variable_conflict use_column
DECLARE
    v_model_id integer;
    v_dim integer;
    v_query vector;
BEGIN
    SELECT m.id, m.embedding_dim INTO v_model_id, v_dim FROM models m WHERE m.is_active;
    IF v_model_id IS NULL THEN
        RAISE EXCEPTION 'similar_images: no active model (see the models table)';
    END IF;
    IF p_k IS NULL OR p_k < 1 THEN
        RETURN;
    END IF;
    SELECT e.embedding INTO v_query
      FROM embeddings e
     WHERE e.image_id = p_image_id AND e.model_id = v_model_id;
    IF v_query IS NULL THEN
        RAISE NOTICE 'similar_images: image % has no embedding for the active model %',
            p_image_id, v_model_id;
        RETURN;
    END IF;
    RETURN QUERY EXECUTE format($q${_KNN_QUERY}$q$, v_dim, v_model_id)
        USING v_query, p_image_id, p_k;
END
$fn$
"""

SIMILAR_TO_VECTOR = f"""
CREATE FUNCTION similar_to_vector(p_vec vector, p_k integer DEFAULT 10)
RETURNS TABLE (image_id bigint, merchant_id text, sku text, uri text, label text,
               distance double precision)
LANGUAGE plpgsql STABLE
{{ITERATIVE_SCAN}}
AS $fn$
#variable_conflict use_column
DECLARE
    v_model_id integer;
    v_dim integer;
BEGIN
    SELECT m.id, m.embedding_dim INTO v_model_id, v_dim FROM models m WHERE m.is_active;
    IF v_model_id IS NULL THEN
        RAISE EXCEPTION 'similar_to_vector: no active model (see the models table)';
    END IF;
    IF vector_dims(p_vec) <> v_dim THEN
        RAISE EXCEPTION 'similar_to_vector: vector has % dimensions, active model % uses %',
            vector_dims(p_vec), v_model_id, v_dim;
    END IF;
    IF p_k IS NULL OR p_k < 1 THEN
        RETURN;
    END IF;
    RETURN QUERY EXECUTE format($q${_KNN_QUERY}$q$, v_dim, v_model_id)
        USING p_vec, NULL::bigint, p_k;
END
$fn$
"""

ACTIVE_MODEL_VIEW = """
CREATE VIEW active_model AS
SELECT id, key, name, version, embedding_dim, labels, spec, path, created_at
  FROM models
 WHERE is_active
"""

IMAGE_LABELS_VIEW = """
CREATE VIEW image_labels AS
SELECT i.id AS image_id, i.merchant_id, i.sku, i.uri, i.status,
       p.label, p.confidence, i.created_at, i.processed_at
  FROM images i
  LEFT JOIN predictions p
         ON p.image_id = i.id
        AND p.model_id = (SELECT m.id FROM models m WHERE m.is_active)
"""

# One row per (image, candidate) in both directions, so `WHERE merchant_id = 'x'` is
# pushed down into both branches before any HNSW probe runs. Add
# `WHERE image_id < duplicate_id` for unordered pairs.
DUPLICATE_CANDIDATES_VIEW = """
CREATE VIEW duplicate_candidates AS
SELECT a.id AS image_id, a.merchant_id, a.sku, a.uri,
       b.id AS duplicate_id, b.merchant_id AS duplicate_merchant_id,
       b.sku AS duplicate_sku, b.uri AS duplicate_uri,
       'sha256'::text AS reason, 0::double precision AS distance
  FROM images a
  JOIN images b ON b.sha256 = a.sha256 AND b.id <> a.id
 WHERE a.sha256 IS NOT NULL
UNION ALL
SELECT a.id, a.merchant_id, a.sku, a.uri,
       s.image_id, s.merchant_id, s.sku, s.uri,
       'embedding'::text, s.distance
  FROM images a
 CROSS JOIN LATERAL similar_images(a.id, 5) s
  JOIN images b ON b.id = s.image_id
 WHERE a.status = 'done'
   AND s.distance < 0.02
   AND a.sha256 IS DISTINCT FROM b.sha256
"""

MODELS_COMMENT = "Registered CNN models (key = name@version); at most one is active."
IMAGES_COMMENT = "One row per merchant upload, unique on (merchant_id, uri)."
PREDICTIONS_COMMENT = "Label and top-k scores per (image, model)."
EMBEDDINGS_COMMENT = (
    "Embedding per (image, model); vector size = models.embedding_dim; "
    "one HNSW index embeddings_hnsw_m<model id> per model."
)

COMMENTS = [
    "COMMENT ON VIEW active_model IS 'The models row currently used by workers and by "
    "similar_images().'",
    "COMMENT ON VIEW image_labels IS 'Every image with the active model''s label "
    "(NULL until processed).'",
    "COMMENT ON VIEW duplicate_candidates IS 'Same sha256, or cosine distance < 0.02 "
    "under the active model (5 nearest neighbours probed). Filter it, e.g. by merchant_id.'",
    "COMMENT ON FUNCTION similar_images(bigint, integer) IS 'k nearest images to an "
    "image under the active model (cosine distance, HNSW), excluding the image itself.'",
    "COMMENT ON FUNCTION similar_to_vector(vector, integer) IS 'k nearest images to a "
    "vector under the active model (cosine distance, HNSW).'",
]


def iterative_scan_clause(order: str = "strict_order") -> str:
    """`SET hnsw.iterative_scan` for the functions, if this pgvector has it (>= 0.8).

    Iterative scans let `LIMIT k` return k rows when k exceeds `hnsw.ef_search` (40) or
    when rows are filtered out after the index scan. On older pgvector the setting does
    not exist and naming it would make the functions fail, so it is left out there.
    """
    clause = f"SET hnsw.iterative_scan = '{order}'"
    if context.is_offline_mode():
        return clause
    version = (
        op.get_bind()
        .execute(sa.text("SELECT extversion FROM pg_extension WHERE extname = 'vector'"))
        .scalar()
    )
    parts = tuple(int(p) for p in str(version).split(".")[:2] if p.isdigit())
    return clause if parts >= (0, 8) else ""


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")

    op.create_table(
        "models",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("version", sa.Text, nullable=False),
        sa.Column("embedding_dim", sa.Integer, nullable=False),
        sa.Column("labels", JSONB, nullable=False),
        sa.Column("spec", JSONB, nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", TSTZ, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name="models_pkey"),
        sa.UniqueConstraint("key", name="models_key_key"),
        sa.CheckConstraint("embedding_dim > 0", name="models_embedding_dim_check"),
        comment=MODELS_COMMENT,
    )
    op.create_index(
        "models_one_active_idx",
        "models",
        ["is_active"],
        unique=True,
        postgresql_where=sa.text("is_active"),
    )

    op.create_table(
        "images",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("merchant_id", sa.Text, nullable=False),
        sa.Column("sku", sa.Text),
        sa.Column("uri", sa.Text, nullable=False),
        sa.Column("sha256", sa.Text),
        sa.Column("width", sa.Integer),
        sa.Column("height", sa.Integer),
        sa.Column("format", sa.Text),
        sa.Column("status", sa.Text, nullable=False, server_default=sa.text("'pending'")),
        sa.Column("error", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("created_at", TSTZ, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TSTZ, nullable=False, server_default=sa.func.now()),
        sa.Column("processed_at", TSTZ),
        sa.PrimaryKeyConstraint("id", name="images_pkey"),
        sa.UniqueConstraint("merchant_id", "uri", name="images_merchant_id_uri_key"),
        sa.CheckConstraint(
            "status IN ('pending', 'processing', 'done', 'failed')",
            name="images_status_check",
        ),
        comment=IMAGES_COMMENT,
    )
    op.create_index("images_sha256_idx", "images", ["sha256"])
    op.create_index("images_merchant_id_created_at_idx", "images", ["merchant_id", "created_at"])
    op.create_index("images_status_idx", "images", ["status"])

    op.create_table(
        "predictions",
        sa.Column("image_id", sa.BigInteger, nullable=False),
        sa.Column("model_id", sa.Integer, nullable=False),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("label_index", sa.Integer, nullable=False),
        sa.Column("confidence", sa.REAL, nullable=False),
        sa.Column("top_k", JSONB, nullable=False),
        sa.Column("created_at", TSTZ, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("image_id", "model_id", name="predictions_pkey"),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], ondelete="CASCADE", name="predictions_image_id_fkey"
        ),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name="predictions_model_id_fkey"),
        comment=PREDICTIONS_COMMENT,
    )
    op.create_index("predictions_model_id_label_idx", "predictions", ["model_id", "label"])

    op.create_table(
        "embeddings",
        sa.Column("image_id", sa.BigInteger, nullable=False),
        sa.Column("model_id", sa.Integer, nullable=False),
        sa.Column("embedding", VECTOR(), nullable=False),
        sa.Column("created_at", TSTZ, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("image_id", "model_id", name="embeddings_pkey"),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], ondelete="CASCADE", name="embeddings_image_id_fkey"
        ),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name="embeddings_model_id_fkey"),
        comment=EMBEDDINGS_COMMENT,
    )
    op.create_index("embeddings_model_id_image_id_idx", "embeddings", ["model_id", "image_id"])

    op.execute(ACTIVE_MODEL_VIEW)
    op.execute(IMAGE_LABELS_VIEW)
    iterative = iterative_scan_clause()
    op.execute(SIMILAR_IMAGES.replace("{ITERATIVE_SCAN}", iterative))
    op.execute(SIMILAR_TO_VECTOR.replace("{ITERATIVE_SCAN}", iterative))
    op.execute(DUPLICATE_CANDIDATES_VIEW)
    for statement in COMMENTS:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS duplicate_candidates")
    op.execute("DROP FUNCTION IF EXISTS similar_to_vector(vector, integer)")
    op.execute("DROP FUNCTION IF EXISTS similar_images(bigint, integer)")
    op.execute("DROP VIEW IF EXISTS image_labels")
    op.execute("DROP VIEW IF EXISTS active_model")
    op.drop_table("embeddings")  # takes every per-model HNSW index with it
    op.drop_table("predictions")
    op.drop_table("images")
    op.drop_table("models")
    # The vector extension stays: other schemas in the database may use it.
