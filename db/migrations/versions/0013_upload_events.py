"""An upload event is a listing's image: identity by event, not by (merchant, uri).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05

Until now `images` was unique on (merchant_id, uri): the same photo sent by a merchant
again, under another SKU (or first with none, then with one), found the first row and
overwrote its SKU, so a listing was lost without an error. Now:

- `images.event_id` names the upload event a row records, unique. A redelivery of the same
  event (a broker handing a message back, a producer re-publishing the same task id, the
  API client re-sending with the same Idempotency-Key, the CLI re-run on the same file and
  SKU) finds its row; any other event is a new row, whatever its bytes or URI. The same
  bytes under another SKU or merchant are another row that reuses the stored result
  (`known_results`, by sha256), with no decode and no forward pass.
- Rows made before keep their ids and get `legacy:<id>`; a row inserted without an event id
  (SQL, bulk COPY) gets `uuid:<random>`, a new event.
- (merchant_id, uri) keeps a plain index: per-merchant counts and lookups use it.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WORKER = "vitrine_worker"
COMMENT_TABLE = (
    "COMMENT ON TABLE images IS 'One row per upload event (a listing''s image), unique on "
    "event_id; the same bytes under another SKU or merchant are another row.'"
)
COMMENT_COLUMN = (
    "COMMENT ON COLUMN images.event_id IS 'The upload event this row records: a redelivery of "
    "the same event finds this row (docs/sql.md, Listings and upload events).'"
)


def upgrade() -> None:
    op.execute("ALTER TABLE images ADD COLUMN event_id text")
    op.execute("UPDATE images SET event_id = 'legacy:' || id")
    op.execute(
        "ALTER TABLE images ALTER COLUMN event_id SET DEFAULT 'uuid:' || gen_random_uuid(), "
        "ALTER COLUMN event_id SET NOT NULL"
    )
    op.execute("ALTER TABLE images ADD CONSTRAINT images_event_id_key UNIQUE (event_id)")
    op.execute("ALTER TABLE images DROP CONSTRAINT images_merchant_id_uri_key")
    op.execute("CREATE INDEX images_merchant_id_uri_idx ON images (merchant_id, uri)")
    op.execute(f"GRANT INSERT (event_id) ON images TO {WORKER}")
    op.execute(COMMENT_TABLE)
    op.execute(COMMENT_COLUMN)


def downgrade() -> None:
    # Only possible while no merchant has two rows of one uri (the old identity).
    op.execute(f"REVOKE INSERT (event_id) ON images FROM {WORKER}")
    op.execute("DROP INDEX images_merchant_id_uri_idx")
    op.execute(
        "ALTER TABLE images ADD CONSTRAINT images_merchant_id_uri_key UNIQUE (merchant_id, uri)"
    )
    op.execute("ALTER TABLE images DROP COLUMN event_id")
    op.execute(
        "COMMENT ON TABLE images IS 'One row per merchant upload, unique on (merchant_id, uri).'"
    )
