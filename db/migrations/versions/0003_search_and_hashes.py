"""Filtered similarity search that always fills k rows, and perceptual-hash duplicates.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

- `images.phash bit(320)`: the product's perceptual hash (`pipeline/phash.py`), written
  by the worker from the pixels it decoded anyway, with an HNSW `bit_hamming_ops` index.
- `duplicate_candidates` is rebuilt on exact bytes (`sha256`) and on hash distance
  (`phash`); the class embedding only breaks ties in the ordering. A class embedding
  says "same kind of thing", so it paired different trousers of the same cut.
- `similar_images` and `similar_to_vector` take optional `merchant_id` and `label`
  filters. How a filtered search runs is chosen per call (docs/sql.md has the numbers):
  a merchant with at most `vitrine.exact_search_rows` images (default 20,000) is
  searched exactly, by an index-only scan of the covering B-tree on `embeddings
  (model_id, merchant_id) INCLUDE (embedding)` (each embedding row now carries its
  image's merchant, set by a trigger); anything else goes
  through the model's HNSW index with a relaxed-order iterative scan, re-sorted, and
  falls back to an exact scan if the index ran dry before k rows. HNSW candidate lists
  are `vitrine.ef_search` long (default 40, never below k + 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

from alembic import op

from vitrine.db.migrate import revision_module

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WORKER, ANALYST, MERCHANT = "vitrine_worker", "vitrine_analyst", "vitrine_merchant"
HASH_BITS = 320
DUPLICATE_BITS = 52  # hash distance at or under which two photos are duplicates
OLD_FUNCTIONS = ("similar_images(bigint, integer)", "similar_to_vector(vector, integer)")
FUNCTIONS = (
    "similar_images(bigint, integer, text, text)",
    "similar_to_vector(vector, integer, text, text)",
    "vitrine_knn(vector, integer, bigint, text, text)",
)
OUTPUT = (
    "image_id bigint, merchant_id text, sku text, uri text, label text, distance double precision"
)

# %1$s = dimension, %2$s = model id (integers read from `models`); $1 = query vector,
# $2 = image id to leave out (or NULL), $3 = k, $4 = merchant (or NULL), $5 = label (or
# NULL). HNSW is used only when the query repeats the index's cast and literal model id.
_FILTERS = """
   AND e.image_id IS DISTINCT FROM $2
   AND ($4::text IS NULL OR i.merchant_id = $4)
   AND ($5::text IS NULL OR p.label = $5)"""
_ANN = f"""
WITH ann AS MATERIALIZED (
    SELECT e.image_id, i.merchant_id, i.sku, i.uri, p.label,
           e.embedding::vector(%1$s) <=> $1 AS distance
      FROM embeddings e
      JOIN images i ON i.id = e.image_id
      LEFT JOIN predictions p ON p.image_id = e.image_id AND p.model_id = %2$s
     WHERE e.model_id = %2$s{_FILTERS}
     ORDER BY e.embedding::vector(%1$s) <=> $1
     LIMIT $3
)
SELECT * FROM (SELECT * FROM ann ORDER BY distance) found WHERE (SELECT count(*) FROM ann) >= $3
UNION ALL
SELECT * FROM (%3$s) exact WHERE (SELECT count(*) FROM ann) < $3
"""
# No filter: the index's first candidate list is the answer (k <= ef_search).
_PLAIN = """
SELECT * FROM (
    SELECT e.image_id, i.merchant_id, i.sku, i.uri, p.label,
           e.embedding::vector(%1$s) <=> $1 AS distance
      FROM embeddings e
      JOIN images i ON i.id = e.image_id
      LEFT JOIN predictions p ON p.image_id = e.image_id AND p.model_id = %2$s
     WHERE e.model_id = %2$s AND e.image_id IS DISTINCT FROM $2
     ORDER BY e.embedding::vector(%1$s) <=> $1
     LIMIT $3
) nearest ORDER BY distance
"""
# The uncast `embedding <=> $1` cannot use the HNSW index: an exact sort of the rows the
# filters leave. With a merchant, they come from one contiguous stretch of the covering
# B-tree on embeddings (model_id, merchant_id) INCLUDE (embedding), an index-only scan:
# no lookup per row. Only the k nearest are joined to their names and labels.
_EXACT = """
    SELECT n.image_id, i.merchant_id, i.sku, i.uri, p.label, n.distance
      FROM (SELECT e.image_id, e.embedding <=> $1 AS distance
              FROM embeddings e
             WHERE e.model_id = %2$s
               AND e.image_id IS DISTINCT FROM $2
               AND ($4::text IS NULL OR e.merchant_id = $4)
               AND ($5::text IS NULL OR EXISTS (
                       SELECT 1 FROM predictions f
                        WHERE f.image_id = e.image_id AND f.model_id = %2$s AND f.label = $5))
             ORDER BY e.embedding <=> $1
             LIMIT $3) n
      JOIN images i ON i.id = n.image_id
      LEFT JOIN predictions p ON p.image_id = n.image_id AND p.model_id = %2$s
     ORDER BY n.distance
"""

FILL_MERCHANTS = """
DO $do$
DECLARE
    v_index record;
    v_definitions text[] := '{}';
BEGIN
    FOR v_index IN
        SELECT indexname, indexdef FROM pg_indexes
         WHERE schemaname = current_schema() AND tablename = 'embeddings'
           AND indexname LIKE 'embeddings_hnsw_m%'
    LOOP
        v_definitions := v_definitions || v_index.indexdef;
        EXECUTE format('DROP INDEX %I', v_index.indexname);
    END LOOP;
    UPDATE embeddings e SET merchant_id = i.merchant_id FROM images i WHERE i.id = e.image_id;
    FOR n IN 1 .. coalesce(array_length(v_definitions, 1), 0) LOOP
        EXECUTE v_definitions[n];
    END LOOP;
END
$do$
"""

# Each embedding row carries its image's merchant (images.merchant_id never changes, and
# no role may update it), so the merchant's vectors can be read from one index range.
EMBEDDING_MERCHANT = """
CREATE FUNCTION vitrine_embedding_merchant() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    SELECT i.merchant_id INTO NEW.merchant_id FROM images i WHERE i.id = NEW.image_id;
    RETURN NEW;
END
$fn$
"""

KNN = f"""
CREATE FUNCTION vitrine_knn(p_vec vector, p_k integer, p_exclude bigint,
                            p_merchant_id text, p_label text)
RETURNS TABLE ({OUTPUT})
LANGUAGE plpgsql STABLE
{{ITERATIVE_SCAN}}
SET hnsw.ef_search = 40
AS $fn$
#variable_conflict use_column
DECLARE
    v_model_id integer;
    v_dim integer;
    v_exact_rows integer := coalesce(
        nullif(current_setting('vitrine.exact_search_rows', true), '')::integer, 20000);
    v_ef integer := coalesce(nullif(current_setting('vitrine.ef_search', true), '')::integer, 40);
    v_rows integer;
BEGIN
    SELECT m.id, m.embedding_dim INTO v_model_id, v_dim FROM models m WHERE m.is_active;
    IF v_model_id IS NULL THEN
        RAISE EXCEPTION 'similar search: no active model (see the models table)';
    END IF;
    IF vector_dims(p_vec) <> v_dim THEN
        RAISE EXCEPTION 'similar search: vector has % dimensions, active model % uses %',
            vector_dims(p_vec), v_model_id, v_dim;
    END IF;
    IF p_k IS NULL OR p_k < 1 THEN
        RETURN;
    END IF;
    IF p_merchant_id IS NOT NULL THEN
        SELECT count(*) INTO v_rows
          FROM (SELECT 1 FROM embeddings e
                 WHERE e.model_id = v_model_id AND e.merchant_id = p_merchant_id
                 LIMIT v_exact_rows + 1) few;
        IF v_rows <= v_exact_rows THEN
            RETURN QUERY EXECUTE format($q${_EXACT}$q$, v_dim, v_model_id)
                USING p_vec, p_exclude, p_k, p_merchant_id, p_label;
            RETURN;
        END IF;
    END IF;
    PERFORM set_config('hnsw.ef_search', greatest(v_ef, p_k + 1)::text, true);
    IF p_merchant_id IS NULL AND p_label IS NULL THEN
        RETURN QUERY EXECUTE format($q${_PLAIN}$q$, v_dim, v_model_id)
            USING p_vec, p_exclude, p_k;
        RETURN;
    END IF;
    RETURN QUERY EXECUTE format($q${_ANN}$q$, v_dim, v_model_id,
                                format($q${_EXACT}$q$, v_dim, v_model_id))
        USING p_vec, p_exclude, p_k, p_merchant_id, p_label;
END
$fn$
"""

SIMILAR_IMAGES = f"""
CREATE FUNCTION similar_images(p_image_id bigint, p_k integer DEFAULT 10,
                               p_merchant_id text DEFAULT NULL, p_label text DEFAULT NULL)
RETURNS TABLE ({OUTPUT})
LANGUAGE plpgsql STABLE
AS $fn$
DECLARE
    v_query vector;
BEGIN
    SELECT e.embedding INTO v_query
      FROM embeddings e JOIN models m ON m.id = e.model_id AND m.is_active
     WHERE e.image_id = p_image_id;
    IF v_query IS NULL THEN
        IF NOT EXISTS (SELECT 1 FROM models WHERE is_active) THEN
            RAISE EXCEPTION 'similar_images: no active model (see the models table)';
        END IF;
        RAISE NOTICE 'similar_images: image % has no embedding for the active model',
            p_image_id;
        RETURN;
    END IF;
    RETURN QUERY SELECT * FROM vitrine_knn(v_query, p_k, p_image_id, p_merchant_id, p_label);
END
$fn$
"""

SIMILAR_TO_VECTOR = f"""
CREATE FUNCTION similar_to_vector(p_vec vector, p_k integer DEFAULT 10,
                                  p_merchant_id text DEFAULT NULL, p_label text DEFAULT NULL)
RETURNS TABLE ({OUTPUT})
LANGUAGE plpgsql STABLE
AS $fn$
BEGIN
    RETURN QUERY SELECT * FROM vitrine_knn(p_vec, p_k, NULL, p_merchant_id, p_label);
END
$fn$
"""

# Each pair in both directions, so `WHERE merchant_id = 'x'` is pushed into both branches
# before any index probe. A hash probe takes the 10 nearest hashes by HNSW.
DUPLICATE_CANDIDATES_VIEW = f"""
CREATE VIEW duplicate_candidates AS
SELECT a.id AS image_id, a.merchant_id, a.sku, a.uri,
       b.id AS duplicate_id, b.merchant_id AS duplicate_merchant_id,
       b.sku AS duplicate_sku, b.uri AS duplicate_uri,
       'sha256'::text AS reason, 0 AS distance
  FROM images a
  JOIN images b ON b.sha256 = a.sha256 AND b.id <> a.id
 WHERE a.sha256 IS NOT NULL
UNION ALL
SELECT a.id, a.merchant_id, a.sku, a.uri,
       b.id, b.merchant_id, b.sku, b.uri,
       'phash'::text, b.distance
  FROM images a
 CROSS JOIN LATERAL (
        SELECT c.id, c.merchant_id, c.sku, c.uri, c.sha256,
               (c.phash <~> a.phash)::integer AS distance
          FROM images c
         WHERE c.phash IS NOT NULL AND c.id <> a.id
         ORDER BY c.phash <~> a.phash
         LIMIT 10) b
 WHERE a.phash IS NOT NULL
   AND b.distance <= {DUPLICATE_BITS}
   AND a.sha256 IS DISTINCT FROM b.sha256
"""

COMMENTS = [
    "COMMENT ON COLUMN images.phash IS 'Perceptual hash of the product (pipeline/phash.py): "
    "256 shape + 64 colour bits; compare with <~> (Hamming distance).'",
    "COMMENT ON VIEW duplicate_candidates IS 'Same sha256 (distance 0), or perceptual hashes "
    f"at most {DUPLICATE_BITS} of {HASH_BITS} bits apart (10 nearest probed). "
    "Filter it, e.g. by merchant_id.'",
    "COMMENT ON FUNCTION similar_images(bigint, integer, text, text) IS 'k nearest images "
    "to an image under the active model, optionally within one merchant and/or label; the "
    "image itself excluded. Returns k rows whenever k match.'",
    "COMMENT ON FUNCTION similar_to_vector(vector, integer, text, text) IS 'k nearest "
    "images to a vector under the active model, optionally within one merchant and/or "
    "label. Returns k rows whenever k match.'",
    "COMMENT ON FUNCTION vitrine_knn(vector, integer, bigint, text, text) IS 'The search "
    "behind similar_images and similar_to_vector (exact or HNSW, chosen per call).'",
]


def _grants(functions: Sequence[str]) -> list[str]:
    return [f"GRANT EXECUTE ON FUNCTION {', '.join(functions)} TO {WORKER}, {ANALYST}, {MERCHANT}"]


def upgrade() -> None:
    op.execute("ALTER TABLE images ADD COLUMN phash bit(320)")
    op.execute("ALTER TABLE embeddings ADD COLUMN merchant_id text")
    # Every embedding row is rewritten once. The per-model HNSW indexes are dropped first
    # and built again after: maintaining them row by row would take ~25 min at 1M rows,
    # dropping and rebuilding ~4 (docs/sql.md). One DO block, so offline SQL scripts
    # (`alembic upgrade --sql`) do the same.
    op.execute(FILL_MERCHANTS)
    op.execute("ALTER TABLE embeddings ALTER COLUMN merchant_id SET NOT NULL")
    op.execute(EMBEDDING_MERCHANT)
    op.execute(
        "CREATE TRIGGER embeddings_merchant BEFORE INSERT ON embeddings "
        "FOR EACH ROW EXECUTE FUNCTION vitrine_embedding_merchant()"
    )
    op.execute(
        "CREATE INDEX embeddings_model_id_merchant_id_idx ON embeddings (model_id, merchant_id) "
        "INCLUDE (embedding)"
    )
    op.execute("CREATE INDEX images_phash_hnsw_idx ON images USING hnsw (phash bit_hamming_ops)")
    op.execute(f"GRANT UPDATE (phash) ON images TO {WORKER}")
    op.execute("DROP VIEW duplicate_candidates")
    for function in OLD_FUNCTIONS:
        op.execute(f"DROP FUNCTION {function}")
    op.execute(KNN.replace("{ITERATIVE_SCAN}", _initial().iterative_scan_clause("relaxed_order")))
    op.execute(SIMILAR_IMAGES)
    op.execute(SIMILAR_TO_VECTOR)
    op.execute(DUPLICATE_CANDIDATES_VIEW)
    for statement in _grants(FUNCTIONS):
        op.execute(statement)
    op.execute(f"GRANT SELECT ON duplicate_candidates TO {WORKER}, {ANALYST}")
    op.execute(_MERCHANT_VIEW_GRANT)
    for statement in COMMENTS:
        op.execute(statement)


# As in 0002: merchants read the view only where it applies their row filter (PG >= 15).
_MERCHANT_VIEW_GRANT = f"""
DO $do$
BEGIN
    IF current_setting('server_version_num')::int >= 150000 THEN
        EXECUTE 'ALTER VIEW duplicate_candidates SET (security_invoker = true)';
        EXECUTE 'GRANT SELECT ON duplicate_candidates TO {MERCHANT}';
    END IF;
END
$do$
"""


def downgrade() -> None:
    op.execute("DROP VIEW duplicate_candidates")
    for function in FUNCTIONS[:2]:
        op.execute(f"DROP FUNCTION {function}")
    op.execute(f"DROP FUNCTION {FUNCTIONS[2]}")
    op.execute(f"REVOKE UPDATE (phash) ON images FROM {WORKER}")
    op.execute("DROP INDEX images_phash_hnsw_idx")
    op.execute("DROP TRIGGER embeddings_merchant ON embeddings")
    op.execute("DROP FUNCTION vitrine_embedding_merchant()")
    op.execute("ALTER TABLE embeddings DROP COLUMN merchant_id")  # and its index
    op.execute("ALTER TABLE images DROP COLUMN phash")
    initial = _initial()
    iterative = initial.iterative_scan_clause()
    op.execute(initial.SIMILAR_IMAGES.replace("{ITERATIVE_SCAN}", iterative))
    op.execute(initial.SIMILAR_TO_VECTOR.replace("{ITERATIVE_SCAN}", iterative))
    op.execute(initial.DUPLICATE_CANDIDATES_VIEW)
    op.execute(
        f"GRANT EXECUTE ON FUNCTION {', '.join(OLD_FUNCTIONS)} TO {WORKER}, {ANALYST}, {MERCHANT}"
    )
    op.execute(f"GRANT SELECT ON duplicate_candidates TO {WORKER}, {ANALYST}")
    op.execute(_MERCHANT_VIEW_GRANT)


def _initial() -> ModuleType:
    """Revision 0001, whose function texts the downgrade restores."""
    return revision_module("0001_initial.py")
