"""A person's decision wins over the model wherever a label is read; "unknown" is an answer.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05

- `images.person_label`: the label of the image's latest review-desk decision
  (`label_corrections`, 0010), kept by a trigger on that table, so reads and filters need
  no lookup per row. Decisions are per image, not per model: they survive a switch to a
  new model.
- `predictions.unknown_score`, `predictions.unknown`: how far the photo lies from every
  class the model knows (higher: further), and whether that is past the model's
  calibrated threshold ("none of our categories"); NULL for predictions made before.
- The effective label, everywhere people or SQL read one: the person's label, else
  'unknown' for a prediction flagged unknown, else the model's label. `image_labels` shows
  it with `label_source` ('person' or 'model'), the model's own label and the declared
  category; the similarity functions return it and filter by it; `label_mismatches` no
  longer lists images a person has decided.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from vitrine.db.migrate import revision_module

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WORKER, ANALYST, MERCHANT = "vitrine_worker", "vitrine_analyst", "vitrine_merchant"


def effective(i: str, p: str) -> str:
    """The effective label of image alias `i` under prediction alias `p` (SQL)."""
    return f"coalesce({i}.person_label, CASE WHEN {p}.unknown THEN 'unknown' ELSE {p}.label END)"


def source(i: str, p: str) -> str:
    return (
        f"CASE WHEN {i}.person_label IS NOT NULL THEN 'person' "
        f"WHEN {p}.label IS NOT NULL THEN 'model' END"
    )


PERSON_LABEL = """
CREATE FUNCTION vitrine_person_label() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    v_image bigint := CASE WHEN TG_OP = 'DELETE' THEN OLD.image_id ELSE NEW.image_id END;
BEGIN
    UPDATE images SET person_label = (
        SELECT c.label FROM label_corrections c WHERE c.image_id = v_image
         ORDER BY c.decided_at DESC, c.id DESC LIMIT 1)
     WHERE id = v_image;
    RETURN NULL;
END
$fn$
"""

IMAGE_LABELS = f"""
CREATE OR REPLACE VIEW image_labels AS
SELECT i.id AS image_id, i.merchant_id, i.sku, i.uri, i.status,
       {effective("i", "p")} AS label, p.confidence, i.created_at, i.processed_at,
       {source("i", "p")} AS label_source,
       p.label AS model_label, p.unknown_score, i.declared_label
  FROM images i
  LEFT JOIN predictions p
         ON p.image_id = i.id
        AND p.model_id = (SELECT m.id FROM models m WHERE m.is_active)
"""


def label_mismatches() -> str:
    """0011's view, leaving out images a person has decided: they are settled."""
    view = str(revision_module("0011_declared_score.py").LABEL_MISMATCHES)
    anchor = " WHERE i.status = 'done'\n"
    assert anchor in view
    return view.replace(anchor, anchor + "   AND i.person_label IS NULL\n", 1)


def knn_function() -> str:
    """0005's `vitrine_knn`, returning and filtering by the effective label."""
    text = revision_module("0005_search_index_only.py").knn_function(index_only=True)
    replacements = [
        ("i.uri, p.label,", f"i.uri, {effective('i', 'p')} AS label,"),
        (
            "AND ($5::text IS NULL OR p.label = $5)",
            f"AND ($5::text IS NULL OR {effective('i', 'p')} = $5)",
        ),
        (
            "SELECT 1 FROM predictions f\n                        WHERE f.image_id = e.image_id "
            "AND f.model_id = %2$s AND f.label = $5))",
            "SELECT 1 FROM predictions f JOIN images fi ON fi.id = f.image_id\n"
            "                        WHERE f.image_id = e.image_id AND f.model_id = %2$s\n"
            f"                          AND {effective('fi', 'f')} = $5))",
        ),
    ]
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    return text


def upgrade() -> None:
    op.execute("SELECT '[1]'::vector")  # pgvector's library, for the function's SET clause
    op.execute("ALTER TABLE images ADD COLUMN person_label text")
    op.execute("ALTER TABLE predictions ADD COLUMN unknown_score real, ADD COLUMN unknown boolean")
    op.execute(f"GRANT UPDATE (unknown_score, unknown) ON predictions TO {WORKER}")
    op.execute(PERSON_LABEL)
    op.execute(
        "CREATE TRIGGER label_corrections_person_label "
        "AFTER INSERT OR DELETE ON label_corrections "
        "FOR EACH ROW EXECUTE FUNCTION vitrine_person_label()"
    )
    op.execute(
        "UPDATE images i SET person_label = c.label FROM ("
        "SELECT DISTINCT ON (image_id) image_id, label FROM label_corrections "
        "ORDER BY image_id, decided_at DESC, id DESC) c WHERE c.image_id = i.id"
    )
    op.execute(IMAGE_LABELS)
    op.execute(label_mismatches())
    op.execute(knn_function())
    roles = revision_module("0002_roles.py")
    op.execute(roles._on_pg15(roles._SET_INVOKER, "vitrine_merchant may not read image_labels"))
    op.execute(revision_module("0009_shop_floor.py").MERCHANT_VIEWS)
    for statement in COMMENTS:
        op.execute(statement)


COMMENTS = [
    "COMMENT ON COLUMN images.person_label IS 'Label of the latest review-desk decision "
    "(label_corrections), kept by a trigger; wins over the model everywhere.'",
    "COMMENT ON COLUMN predictions.unknown_score IS 'How far the photo lies from every class "
    "the model knows (higher: further); NULL: made before it was measured.'",
    "COMMENT ON COLUMN predictions.unknown IS 'unknown_score past the model''s calibrated "
    "threshold: none of the model''s categories.'",
    "COMMENT ON VIEW image_labels IS 'Every image with its effective label under the active "
    "model: a person''s decision, else unknown, else the model''s (label_source says which).'",
]


def downgrade() -> None:
    op.execute("SELECT '[1]'::vector")
    op.execute(revision_module("0005_search_index_only.py").knn_function(index_only=True))
    op.execute(str(revision_module("0011_declared_score.py").LABEL_MISMATCHES))
    op.execute("DROP VIEW image_labels")
    op.execute(str(revision_module("0001_initial.py").IMAGE_LABELS_VIEW))
    roles = revision_module("0002_roles.py")
    op.execute(roles._on_pg15(roles._SET_INVOKER, "vitrine_merchant may not read image_labels"))
    op.execute(revision_module("0009_shop_floor.py").MERCHANT_VIEWS)
    op.execute("DROP TRIGGER label_corrections_person_label ON label_corrections")
    op.execute("DROP FUNCTION vitrine_person_label()")
    op.execute("ALTER TABLE predictions DROP COLUMN unknown_score, DROP COLUMN unknown")
    op.execute("ALTER TABLE images DROP COLUMN person_label")
