"""Wrong categories by the probability the model gives the declared one.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-28

0009 listed an item when a confident prediction (>= 0.95) disagreed with the merchant's
declared category. Measured by `vitrine bench mismatches` (2,000 photos, 5 % declared
wrong), that rule reached precision 0.72 at recall 0.82: most false alarms were the
model's own confident mistakes between look-alike classes (a shirt taken for a T-shirt),
where the declared class still gets a few per cent. A wrong declaration drawn from the
other classes (a bag declared for a sneaker) gets next to nothing. So:

- `predictions.declared_score`: the probability the model gives the image's declared
  category, stored by the worker with the prediction (NULL: nothing declared, not one
  of the model's labels, or a prediction copied from known bytes);
- `label_mismatches` lists done images whose declared category is not the prediction
  and gets a probability under `vitrine.mismatch_max_declared_score` (default 0.0001);
  where `declared_score` is NULL it uses the declared label's score among the stored
  top-k (0 if absent). Same bench: precision 0.94 at recall 0.93 (seed 2026), 0.95 at
  0.89 (seed 1). Most certain first. The column `declared_score` is added at the end.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from vitrine.db.migrate import revision_module

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WORKER = "vitrine_worker"
#: Default of the setting vitrine.mismatch_max_declared_score (`vitrine bench mismatches`).
MISMATCH_MAX_DECLARED_SCORE = "0.0001"

# The declared label's probability: stored, else its score among the top-k, else 0.
_DECLARED_SCORE = """coalesce(p.declared_score, (
           SELECT (t ->> 'score')::real FROM jsonb_array_elements(p.top_k) AS t
            WHERE lower(t ->> 'label') = lower(btrim(i.declared_label)) LIMIT 1), 0)"""

LABEL_MISMATCHES = f"""
CREATE OR REPLACE VIEW label_mismatches AS
SELECT i.id AS image_id, i.merchant_id, i.sku, i.uri, i.declared_label,
       p.label AS predicted_label, p.confidence, i.processed_at,
       {_DECLARED_SCORE} AS declared_score
  FROM images i
  JOIN models m ON m.is_active
  JOIN predictions p ON p.image_id = i.id AND p.model_id = m.id
 WHERE i.status = 'done'
   AND lower(btrim(i.declared_label)) <> lower(p.label)
   AND lower(btrim(i.declared_label)) IN (
       SELECT lower(l) FROM jsonb_array_elements_text(m.labels) AS l)
   AND {_DECLARED_SCORE} < coalesce(
       nullif(current_setting('vitrine.mismatch_max_declared_score', true), ''),
       '{MISMATCH_MAX_DECLARED_SCORE}')::real
 ORDER BY 9, p.confidence DESC, i.id
"""


def upgrade() -> None:
    previous = revision_module("0009_shop_floor.py")
    op.execute("ALTER TABLE predictions ADD COLUMN declared_score real")
    op.execute(f"GRANT UPDATE (declared_score) ON predictions TO {WORKER}")
    op.execute(LABEL_MISMATCHES)
    op.execute(previous.MERCHANT_VIEWS)  # CREATE OR REPLACE resets the view's options
    op.execute(
        "COMMENT ON COLUMN predictions.declared_score IS 'Probability of the declared "
        "category (NULL: none declared, not a label, or copied).'"
    )
    op.execute(
        "COMMENT ON VIEW label_mismatches IS 'Done images whose declared category gets a "
        "probability under vitrine.mismatch_max_declared_score (docs/sql.md).'"
    )


def downgrade() -> None:
    previous = revision_module("0009_shop_floor.py")
    op.execute("DROP VIEW label_mismatches")  # a column goes: CREATE OR REPLACE cannot
    op.execute(previous.LABEL_MISMATCHES)
    op.execute(previous.MERCHANT_VIEWS)
    op.execute(f"GRANT SELECT ON label_mismatches TO {previous.ANALYST}")
    for statement in previous.COMMENTS:
        if "VIEW label_mismatches" in statement:
            op.execute(statement)
    op.execute(f"REVOKE UPDATE (declared_score) ON predictions FROM {WORKER}")
    op.execute("ALTER TABLE predictions DROP COLUMN declared_score")
