"""Erasure audit trail: who made vitrine forget a merchant or an image, when, how much.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28

`vitrine forget` deletes image rows (their predictions, embeddings and any other
image-keyed rows go by ON DELETE CASCADE) and the upload files vitrine itself stored.
What stays is one `erasures` row per erasure, so that "was this merchant's data
deleted, by whom, when?" has an answer that does not depend on anyone's log retention:

- `db_user` defaults to `session_user` (the login, which SET ROLE does not change), so
  the database, not the client, says who connected; `os_user` is what the client says
  its operating-system user was (informational, NULL if unknown).
- `scope` is 'merchant' or 'image', `subject` the merchant id or the image id as text.
  The columns are deliberately not called merchant_id/image_id: this row must survive
  the erasure it records, and nothing should join it back to data that is gone.
- Only the owner (who runs `vitrine forget`) writes it. The analyst reads it through
  the default SELECT of 0002 and an explicit policy; workers and merchants get nothing,
  and row-level security without a policy for them hides every row even if granted.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CREATE = """
CREATE TABLE erasures (
    id bigserial PRIMARY KEY,
    scope text NOT NULL,
    subject text NOT NULL,
    db_user text NOT NULL DEFAULT session_user,
    os_user text,
    images_deleted integer NOT NULL,
    files_deleted integer NOT NULL,
    erased_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT erasures_scope_check CHECK (scope IN ('merchant', 'image')),
    CONSTRAINT erasures_subject_check CHECK (subject <> ''),
    CONSTRAINT erasures_counts_check CHECK (images_deleted >= 0 AND files_deleted >= 0)
)
"""

COMMENT = (
    "COMMENT ON TABLE erasures IS 'Audit trail of vitrine forget: who (database login, OS "
    "user), what (merchant or image), when, how many images and files were deleted.'"
)


def upgrade() -> None:
    op.execute(CREATE)
    op.execute(COMMENT)
    op.execute("ALTER TABLE erasures ENABLE ROW LEVEL SECURITY")
    op.execute(
        "CREATE POLICY erasures_analyst ON erasures FOR SELECT TO vitrine_analyst USING (true)"
    )
    # A no-op today (no default privileges for these groups), written so a reader of the
    # offline SQL sees the intent: workers and merchants never touch the audit trail.
    op.execute("REVOKE ALL ON erasures, erasures_id_seq FROM vitrine_worker, vitrine_merchant")


def downgrade() -> None:
    op.execute("DROP TABLE erasures")  # its policy goes with it
