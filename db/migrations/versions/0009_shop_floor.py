"""Shop floor: merchants' declared categories, shoppers' review photos, and their views.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29

- `images.declared_label`: the category the merchant declared with the upload, stored as
  sent (any text, NULL when none). Compared case-insensitively, after trimming, to the
  active model's labels; a declaration that is not one of them is kept but never judged.
- `label_mismatches`: done images whose declared category is one of the active model's
  labels and differs from its prediction, where the prediction is at least
  `vitrine.mismatch_min_confidence` confident (default `MISMATCH_MIN_CONFIDENCE`, measured
  by `vitrine bench mismatches`); most confident first.
- `reviews`: one row per shopper's review photo of a listing (merchant_id + sku), unique
  on (merchant_id, sku, uri). The worker (`vitrine.review`) stores its prediction, the
  listing's class (the most common prediction among the listing's done images) and the
  match score: the best cosine similarity of the photo's embedding to the embeddings of
  the listing's done images, all under the model in `model_id`, as they were then.
  NULL listing figures: the listing had no done image.
- `review_mismatches`: done reviews under the active model whose match score is under
  `vitrine.review_min_match` (default `REVIEW_MIN_MATCH`, measured by `vitrine bench
  reviews`) or whose predicted class is not the listing's; worst match first. `image_id`
  is the listing's first done image (lowest id), so that catalog tools (the review desk's
  queues) can join a review to the listing it disputes.
- Grants as 0002/0007 decided: the worker writes the new columns and rows, the analyst
  reads, a merchant reads its own reviews through a policy; both views are
  security_invoker where PostgreSQL >= 15 allows it (merchants may read them only there).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WORKER, ANALYST, MERCHANT = "vitrine_worker", "vitrine_analyst", "vitrine_merchant"
#: Defaults of the settings vitrine.mismatch_min_confidence / vitrine.review_min_match.
MISMATCH_MIN_CONFIDENCE = "0.95"
REVIEW_MIN_MATCH = "0.6"
REVIEW_RESULTS = "status, error, label, confidence, listing_label, match_score, model_id"

CREATE = """
CREATE TABLE reviews (
    id bigserial NOT NULL,
    merchant_id text NOT NULL,
    sku text NOT NULL,
    review_ref text,
    uri text NOT NULL,
    status text NOT NULL DEFAULT 'pending',
    error text,
    label text,
    confidence real,
    listing_label text,
    match_score real,
    model_id integer,
    created_at timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz,
    CONSTRAINT reviews_pkey PRIMARY KEY (id),
    CONSTRAINT reviews_merchant_id_sku_uri_key UNIQUE (merchant_id, sku, uri),
    CONSTRAINT reviews_status_check CHECK (status IN ('pending', 'done', 'failed')),
    CONSTRAINT reviews_model_id_fkey FOREIGN KEY (model_id) REFERENCES models (id)
)
"""


def _setting(name: str, default: str) -> str:
    return f"coalesce(nullif(current_setting('vitrine.{name}', true), ''), '{default}')::real"


LABEL_MISMATCHES = f"""
CREATE VIEW label_mismatches AS
SELECT i.id AS image_id, i.merchant_id, i.sku, i.uri, i.declared_label,
       p.label AS predicted_label, p.confidence, i.processed_at
  FROM images i
  JOIN models m ON m.is_active
  JOIN predictions p ON p.image_id = i.id AND p.model_id = m.id
 WHERE i.status = 'done'
   AND lower(btrim(i.declared_label)) <> lower(p.label)
   AND lower(btrim(i.declared_label)) IN (
       SELECT lower(l) FROM jsonb_array_elements_text(m.labels) AS l)
   AND p.confidence >= {_setting("mismatch_min_confidence", MISMATCH_MIN_CONFIDENCE)}
 ORDER BY p.confidence DESC, i.id
"""

REVIEW_MISMATCHES = f"""
CREATE VIEW review_mismatches AS
SELECT r.id AS review_id,
       (SELECT min(i.id) FROM images i WHERE i.merchant_id = r.merchant_id
           AND i.sku = r.sku AND i.status = 'done') AS image_id,
       r.merchant_id, r.sku, r.review_ref, r.uri, r.label,
       r.confidence, r.listing_label, r.match_score,
       array_remove(ARRAY[
           CASE WHEN r.match_score < t.min_match THEN 'low_match' END,
           CASE WHEN r.label <> r.listing_label THEN 'other_class' END], NULL) AS reasons,
       r.processed_at
  FROM reviews r
  JOIN models m ON m.id = r.model_id AND m.is_active
 CROSS JOIN (SELECT {_setting("review_min_match", REVIEW_MIN_MATCH)} AS min_match) AS t
 WHERE r.status = 'done'
   AND (r.match_score < t.min_match OR r.label <> r.listing_label)
 ORDER BY r.match_score, r.id
"""

_IN_SCOPE = "merchant_id = ANY ((SELECT vitrine_merchant_scope())::text[])"
POLICIES = [
    ("worker", f"FOR ALL TO {WORKER} USING (true) WITH CHECK (true)"),
    ("analyst", f"FOR SELECT TO {ANALYST} USING (true)"),
    ("merchant", f"FOR SELECT TO {MERCHANT} USING ({_IN_SCOPE})"),
]
GRANTS = [
    f"INSERT (declared_label), UPDATE (declared_label) ON images TO {WORKER}",
    f"SELECT, INSERT (merchant_id, sku, review_ref, uri) ON reviews TO {WORKER}",
    f"UPDATE (review_ref, {REVIEW_RESULTS}, processed_at) ON reviews TO {WORKER}",
    f"USAGE ON SEQUENCE reviews_id_seq TO {WORKER}",
    f"SELECT ON reviews, label_mismatches, review_mismatches TO {ANALYST}",
    f"SELECT ON reviews TO {MERCHANT}",
]
MERCHANT_VIEWS = f"""
DO $do$
BEGIN
    IF current_setting('server_version_num')::int >= 150000 THEN
        EXECUTE 'ALTER VIEW label_mismatches SET (security_invoker = true)';
        EXECUTE 'ALTER VIEW review_mismatches SET (security_invoker = true)';
        EXECUTE 'GRANT SELECT ON label_mismatches, review_mismatches TO {MERCHANT}';
    ELSE
        RAISE NOTICE 'PostgreSQL < 15: vitrine_merchant may not read the mismatch views';
    END IF;
END
$do$
"""
COMMENTS = [
    "COMMENT ON COLUMN images.declared_label IS 'Category the merchant declared, as sent; "
    "compared case-insensitively to the model''s labels by view label_mismatches.'",
    "COMMENT ON TABLE reviews IS 'Shoppers'' review photos of a listing (merchant_id, sku): "
    "prediction, the listing''s class and the match score to its images.'",
    "COMMENT ON VIEW label_mismatches IS 'Done images whose declared category disagrees with "
    "a confident prediction; threshold vitrine.mismatch_min_confidence (docs/sql.md).'",
    "COMMENT ON VIEW review_mismatches IS 'Review photos that do not show what was listed; "
    "threshold vitrine.review_min_match (docs/sql.md).'",
]


def upgrade() -> None:
    op.execute("ALTER TABLE images ADD COLUMN declared_label text")
    op.execute(CREATE)
    op.execute(LABEL_MISMATCHES)
    op.execute(REVIEW_MISMATCHES)
    for grant in GRANTS:
        op.execute(f"GRANT {grant}")
    op.execute("ALTER TABLE reviews ENABLE ROW LEVEL SECURITY")
    for who, clause in POLICIES:
        op.execute(f"CREATE POLICY reviews_{who} ON reviews {clause}")
    op.execute(MERCHANT_VIEWS)
    for statement in COMMENTS:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP VIEW review_mismatches")
    op.execute("DROP VIEW label_mismatches")
    op.execute("DROP TABLE reviews")  # its grants and policies go with it
    op.execute("ALTER TABLE images DROP COLUMN declared_label")
