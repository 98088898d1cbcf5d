"""Near-duplicate pairs kept as rows, pair decisions and undo for the review desk.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06

`duplicate_pairs` holds every near-duplicate pair once (`image_id < other_image_id`),
with its reason ('sha256' or 'phash') and distance in bits: what `duplicate_candidates`
finds, kept as rows. The view probes the hash index once per image it reads, so a count
over a catalog of 100,000 images took minutes; the workers now add an image's pairs in the
transaction that saves its hash (two copies saved at the very same moment by two batches
can miss each other; a later copy or a rehash finds them), and this migration fills the
table once from the view. A desk page then reads an indexed table.

The desk shows near-duplicates and review photos as pairs; a person's verdict on a pair is
one row of `pair_decisions`, so a decided pair never comes back to any queue:

- `kind` 'duplicate': two listing images (`image_id` < `other_image_id`, each pair stored
  once), decided 'not_duplicate' (different products), 'same_product' (both listings
  stay) or 'delist_one' (`delisted_image_id` names the one to take down; the view
  `delisted_images` lists them for the platform).
- `kind` 'review': a shopper's review photo (`review_id`) against its listing
  (`image_id`), decided 'matches' or 'does_not_match'.
- `action_id` groups what one click decided (a bulk approval is one action), in this
  table and in `label_corrections` (new column): "undo" removes the latest action of the
  person who asks, whole. `decided_by` and `decided_at` say who and when.
- `images_sku_idx`: the desk finds listings by SKU, whole or by its beginning.
- `quality_issues` (0007) computes its reasons in words only for images that fail a rule:
  it wrote seven texts per measured image and dropped them for most, and it read its seven
  thresholds once per image, so counting the desk's quality queue took 1.7 s at 100,000
  images. Same columns, same rows.
- Rows go with their images and reviews (ON DELETE CASCADE: `vitrine forget`). Only the
  owner (the API's login) writes; the analyst reads everything, a merchant's desk session
  its own images' rows; workers get nothing, as with `label_corrections` (0010).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from alembic import op

from vitrine.db.migrate import revision_module

revision: str = "0016"
down_revision: str | Sequence[str] | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WORKER, ANALYST, MERCHANT = "vitrine_worker", "vitrine_analyst", "vitrine_merchant"

PAIRS = """
CREATE TABLE duplicate_pairs (
    image_id bigint NOT NULL,
    other_image_id bigint NOT NULL,
    reason text NOT NULL,
    distance integer NOT NULL,
    found_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT duplicate_pairs_pkey PRIMARY KEY (image_id, other_image_id),
    CONSTRAINT duplicate_pairs_image_id_fkey FOREIGN KEY (image_id)
        REFERENCES images (id) ON DELETE CASCADE,
    CONSTRAINT duplicate_pairs_other_image_id_fkey FOREIGN KEY (other_image_id)
        REFERENCES images (id) ON DELETE CASCADE,
    CONSTRAINT duplicate_pairs_order_check CHECK (image_id < other_image_id),
    CONSTRAINT duplicate_pairs_reason_check CHECK (reason IN ('sha256', 'phash'))
)
"""

#: An image's pairs from the view, each once; the workers run the same for the images they
#: finish (`vitrine.db.repository.pairs.record_duplicates`), this migration for all.
FILL_PAIRS = """
INSERT INTO duplicate_pairs (image_id, other_image_id, reason, distance)
SELECT DISTINCT ON (least(d.image_id, d.duplicate_id), greatest(d.image_id, d.duplicate_id))
       least(d.image_id, d.duplicate_id), greatest(d.image_id, d.duplicate_id),
       d.reason, d.distance
  FROM duplicate_candidates d
 ORDER BY least(d.image_id, d.duplicate_id), greatest(d.image_id, d.duplicate_id), d.distance
ON CONFLICT DO NOTHING
"""

_BOTH_IN_SCOPE = (
    "EXISTS (SELECT 1 FROM images i WHERE i.id = duplicate_pairs.image_id "
    "AND i.merchant_id = ANY ((SELECT vitrine_merchant_scope())::text[])) "
    "AND EXISTS (SELECT 1 FROM images i WHERE i.id = duplicate_pairs.other_image_id "
    "AND i.merchant_id = ANY ((SELECT vitrine_merchant_scope())::text[]))"
)

CREATE = """
CREATE TABLE pair_decisions (
    id bigserial PRIMARY KEY,
    kind text NOT NULL,
    image_id bigint NOT NULL,
    other_image_id bigint,
    review_id bigint,
    decision text NOT NULL,
    delisted_image_id bigint,
    action_id uuid NOT NULL,
    decided_by text NOT NULL,
    decided_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pair_decisions_image_id_fkey FOREIGN KEY (image_id)
        REFERENCES images (id) ON DELETE CASCADE,
    CONSTRAINT pair_decisions_other_image_id_fkey FOREIGN KEY (other_image_id)
        REFERENCES images (id) ON DELETE CASCADE,
    CONSTRAINT pair_decisions_review_id_fkey FOREIGN KEY (review_id)
        REFERENCES reviews (id) ON DELETE CASCADE,
    CONSTRAINT pair_decisions_kind_check CHECK (
        (kind = 'duplicate' AND other_image_id > image_id AND review_id IS NULL
         AND decision IN ('not_duplicate', 'same_product', 'delist_one'))
        OR (kind = 'review' AND review_id IS NOT NULL AND other_image_id IS NULL
            AND decision IN ('matches', 'does_not_match'))),
    CONSTRAINT pair_decisions_delisted_check CHECK (
        (decision = 'delist_one') = (delisted_image_id IS NOT NULL)
        AND (delisted_image_id IS NULL OR delisted_image_id IN (image_id, other_image_id)))
)
"""

INDEXES = [
    "CREATE UNIQUE INDEX pair_decisions_duplicate_key ON pair_decisions "
    "(image_id, other_image_id) WHERE kind = 'duplicate'",
    "CREATE UNIQUE INDEX pair_decisions_review_key ON pair_decisions (review_id) "
    "WHERE kind = 'review'",
    "CREATE INDEX pair_decisions_other_image_id_idx ON pair_decisions (other_image_id)",
    "CREATE INDEX pair_decisions_delisted_idx ON pair_decisions (delisted_image_id) "
    "WHERE delisted_image_id IS NOT NULL",
    "CREATE INDEX pair_decisions_decided_by_idx ON pair_decisions (decided_by, decided_at)",
    "CREATE INDEX label_corrections_decided_by_idx ON label_corrections (decided_by, decided_at)",
    # the desk's search by SKU, whole or by its beginning (LIKE 'ab%')
    "CREATE INDEX images_sku_idx ON images (sku text_pattern_ops)",
]

_IN_SCOPE = (
    "EXISTS (SELECT 1 FROM images i WHERE i.id = pair_decisions.image_id "
    "AND i.merchant_id = ANY ((SELECT vitrine_merchant_scope())::text[]))"
)

DELISTED = """
CREATE VIEW delisted_images AS
SELECT d.delisted_image_id AS image_id, i.merchant_id, i.sku, i.uri,
       CASE WHEN d.delisted_image_id = d.image_id THEN d.other_image_id ELSE d.image_id END
           AS kept_image_id,
       d.decided_by, d.decided_at
  FROM pair_decisions d
  JOIN images i ON i.id = d.delisted_image_id
 WHERE d.decision = 'delist_one'
"""

COMMENTS = [
    "COMMENT ON TABLE pair_decisions IS 'Review-desk verdicts on pairs: near-duplicates "
    "(not_duplicate, same_product, delist_one) and review photos against their listing "
    "(matches, does_not_match). A decided pair leaves the desk''s queues.'",
    "COMMENT ON COLUMN label_corrections.action_id IS 'What one desk action decided "
    "(a bulk approval is one action); undo removes the latest action of a person.'",
    "COMMENT ON VIEW delisted_images IS 'Listings a person chose to take down as a "
    "duplicate of kept_image_id (pair_decisions).'",
]


def quality_issues_view() -> str:
    """0007's view, its per-image reasons computed only where some rule fails (the rules
    read from the view itself, so they cannot drift from it)."""
    view = str(revision_module("0007_image_quality.py").VIEW)
    rules = re.findall(r"\(\d, '\w+', (.+?),\n", view)
    assert len(rules) == 7, rules
    anchor = " WHERE r.reasons IS NOT NULL\n"
    assert anchor in view
    fails = " WHERE (" + " OR ".join(rules) + ")\n   AND r.reasons IS NOT NULL\n"
    # the thresholds once per query, not once per row (a subquery without FROM is pulled up)
    once = ") AS t\n CROSS JOIN LATERAL"
    assert view.count(once) == 1
    view = view.replace(once, " OFFSET 0) AS t\n CROSS JOIN LATERAL", 1)
    return view.replace("CREATE VIEW", "CREATE OR REPLACE VIEW", 1).replace(anchor, fails, 1)


def upgrade() -> None:
    quality = revision_module("0007_image_quality.py")
    op.execute(quality_issues_view())
    op.execute(quality.MERCHANT_VIEW)  # CREATE OR REPLACE resets the view's options
    op.execute(PAIRS)
    op.execute(
        "CREATE INDEX duplicate_pairs_other_image_id_idx ON duplicate_pairs (other_image_id)"
    )
    op.execute(FILL_PAIRS)
    op.execute("ALTER TABLE duplicate_pairs ENABLE ROW LEVEL SECURITY")
    for role, rule in (
        ("worker", f"FOR ALL TO {WORKER} USING (true) WITH CHECK (true)"),
        ("analyst", f"FOR SELECT TO {ANALYST} USING (true)"),
        ("merchant", f"FOR SELECT TO {MERCHANT} USING ({_BOTH_IN_SCOPE})"),
    ):
        op.execute(f"CREATE POLICY duplicate_pairs_{role} ON duplicate_pairs {rule}")
    op.execute(f"GRANT SELECT, INSERT, DELETE ON duplicate_pairs TO {WORKER}")
    op.execute(f"GRANT SELECT ON duplicate_pairs TO {ANALYST}, {MERCHANT}")
    op.execute(
        "COMMENT ON TABLE duplicate_pairs IS 'Near-duplicate pairs, each once (image_id < "
        "other_image_id): the same bytes (sha256, distance 0) or perceptual hashes at most "
        "the view''s bits apart (phash). Added by the workers as they finish images.'"
    )
    op.execute(CREATE)
    op.execute("ALTER TABLE label_corrections ADD COLUMN action_id uuid")
    for statement in INDEXES:
        op.execute(statement)
    op.execute(DELISTED)
    for statement in COMMENTS:
        op.execute(statement)
    op.execute("ALTER TABLE pair_decisions ENABLE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY pair_decisions_analyst ON pair_decisions FOR SELECT TO {ANALYST} "
        "USING (true)"
    )
    op.execute(
        f"CREATE POLICY pair_decisions_merchant ON pair_decisions FOR SELECT TO {MERCHANT} "
        f"USING ({_IN_SCOPE})"
    )
    op.execute(f"GRANT SELECT ON pair_decisions, delisted_images TO {ANALYST}")
    op.execute(f"GRANT SELECT ON pair_decisions TO {MERCHANT}")
    # The view applies its reader's row security only as security_invoker (PostgreSQL 15+).
    roles = revision_module("0002_roles.py")
    op.execute(
        roles._on_pg15(
            [
                "ALTER VIEW delisted_images SET (security_invoker = true)",
                f"GRANT SELECT ON delisted_images TO {MERCHANT}",
            ],
            "vitrine_merchant may not read delisted_images",
        )
    )
    op.execute("REVOKE ALL ON pair_decisions, pair_decisions_id_seq FROM vitrine_worker")


def downgrade() -> None:
    quality = revision_module("0007_image_quality.py")
    op.execute(quality.VIEW.replace("CREATE VIEW", "CREATE OR REPLACE VIEW", 1))
    op.execute(quality.MERCHANT_VIEW)
    op.execute("DROP VIEW delisted_images")
    op.execute("DROP TABLE pair_decisions")  # its policies and grants go with it
    op.execute("DROP TABLE duplicate_pairs")
    op.execute("DROP INDEX label_corrections_decided_by_idx")
    op.execute("DROP INDEX images_sku_idx")
    op.execute("ALTER TABLE label_corrections DROP COLUMN action_id")
