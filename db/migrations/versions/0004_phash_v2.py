"""The second perceptual-hash recipe: duplicates at 30 bits, hashes of the first cleared.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28

`pipeline/phash.py` now frames the product by its moments (sub-pixel), follows the
photo's own contrast, strips coloured padding, ignores thin strokes when choosing the
product, and spends its bits as 144 shape + 170 colour (chromaticity and lightness)
instead of 256 + 64. On generated re-published listings recall went from 0.87 to 0.97 at
precision >= 0.99 (docs/sql.md). The two recipes' hashes are not comparable, so:

- every stored `images.phash` is cleared (NULL: "not hashed"); images uploaded again are
  hashed by the new recipe, and `duplicate_candidates` skips images without a hash;
- `duplicate_candidates` pairs hashes at most 30 bits apart (was 52).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from vitrine.db.migrate import revision_module

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DUPLICATE_BITS = (
    30  # vitrine.pipeline.inference.phash.DUPLICATE_BITS (a unit test keeps them equal)
)
PREVIOUS_BITS = 52


def upgrade() -> None:
    _replace(DUPLICATE_BITS, "144 shape + 170 colour bits")


def downgrade() -> None:
    _replace(PREVIOUS_BITS, "256 shape + 64 colour bits")


def _replace(bits: int, layout: str) -> None:
    """Clear the hashes, then the view and comments for `bits`; grants survive CREATE OR
    REPLACE, view options do not, so the merchant's row-filtered access is set again."""
    previous = revision_module("0003_search_and_hashes.py")
    op.execute("UPDATE images SET phash = NULL WHERE phash IS NOT NULL")
    view = previous.DUPLICATE_CANDIDATES_VIEW.replace(
        f"b.distance <= {previous.DUPLICATE_BITS}", f"b.distance <= {bits}"
    )
    op.execute(view.replace("CREATE VIEW", "CREATE OR REPLACE VIEW", 1))
    op.execute(previous._MERCHANT_VIEW_GRANT)
    op.execute(
        "COMMENT ON COLUMN images.phash IS 'Perceptual hash of the product (pipeline/phash.py): "
        f"{layout}; compare with <~> (Hamming distance). NULL: not hashed.'"
    )
    op.execute(
        "COMMENT ON VIEW duplicate_candidates IS 'Same sha256 (distance 0), or perceptual "
        f"hashes at most {bits} of {previous.HASH_BITS} bits apart (10 nearest probed). "
        "Filter it, e.g. by merchant_id.'"
    )
