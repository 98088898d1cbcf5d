"""Label corrections: what a person at the review desk decided about an image's label.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28

The review desk (`/desk`, api/desk.py) shows work queues (quality issues, wrong
categories, review mismatches, near-duplicates, low confidence); each decision is one
row here, and `vitrine train --corrections` reads them as labels a person vouched for:

- `action` 'approve' keeps the label the model gave (`label` = that label), 'relabel'
  sets another (`label` = the corrected one); `previous_label` is the active model's label
  when the person decided, `model_id` that model (NULL: no prediction then).
- `queue` names the queue the decision came from (NULL: from the item page), and
  `decided_by` the API client whose token the desk session holds.
- Rows go with their image (ON DELETE CASCADE, so `vitrine forget` erases them too).
- Only the owner (the API's login) writes. The analyst reads everything; a merchant's
  desk session reads its own images' rows through a policy, as with `image_quality`
  (0007), since its queues must leave out what was already decided. Workers get nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MERCHANT = "vitrine_merchant"

CREATE = """
CREATE TABLE label_corrections (
    id bigserial PRIMARY KEY,
    image_id bigint NOT NULL,
    model_id integer,
    action text NOT NULL,
    label text NOT NULL,
    previous_label text,
    queue text,
    decided_by text NOT NULL,
    decided_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT label_corrections_image_id_fkey FOREIGN KEY (image_id)
        REFERENCES images (id) ON DELETE CASCADE,
    CONSTRAINT label_corrections_model_id_fkey FOREIGN KEY (model_id) REFERENCES models (id),
    CONSTRAINT label_corrections_action_check CHECK (action IN ('approve', 'relabel'))
)
"""

_IN_SCOPE = (
    "EXISTS (SELECT 1 FROM images i WHERE i.id = label_corrections.image_id "
    "AND i.merchant_id = ANY ((SELECT vitrine_merchant_scope())::text[]))"
)
COMMENT = (
    "COMMENT ON TABLE label_corrections IS 'Review-desk decisions: approve keeps the "
    "label, relabel corrects it; read by vitrine train --corrections.'"
)


def upgrade() -> None:
    op.execute(CREATE)
    op.execute("CREATE INDEX label_corrections_image_id_idx ON label_corrections (image_id)")
    op.execute(COMMENT)
    op.execute("ALTER TABLE label_corrections ENABLE ROW LEVEL SECURITY")
    op.execute(
        "CREATE POLICY label_corrections_analyst ON label_corrections "
        "FOR SELECT TO vitrine_analyst USING (true)"
    )
    op.execute(f"GRANT SELECT ON label_corrections TO {MERCHANT}")
    op.execute(
        f"CREATE POLICY label_corrections_merchant ON label_corrections "
        f"FOR SELECT TO {MERCHANT} USING ({_IN_SCOPE})"
    )
    # A no-op today (no default privileges for workers), written so a reader of the
    # offline SQL sees the intent: workers never read or write decisions.
    op.execute("REVOKE ALL ON label_corrections, label_corrections_id_seq FROM vitrine_worker")


def downgrade() -> None:
    op.execute("DROP TABLE label_corrections")  # its policies and grants go with it
