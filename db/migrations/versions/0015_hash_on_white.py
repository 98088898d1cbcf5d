"""Perceptual hashes are measured again: transparency composited on white, padding found.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05

The hash used to read a cut-out's pixels without its alpha channel, so what lay under the
transparency (mostly black) was hashed as if it were the photo: on the demo catalog, 212
near-duplicate pairs among 300 distinct items, 190 of them between different classes,
every one a transparent PNG. `pipeline/phash.py` now composites transparency onto white
first (`pipeline/flatten.py`), as the model, the quality figures and the desk do.

The hash also finds white padding around a studio photo (a vignetted backdrop is not one
uniform colour, which the old rule required), and weighs a studio shot's pixels against
its flat-fielded sweep rather than its median colour, so vignetting and a soft shadow no
longer count as product: `vitrine bench duplicates` recall 0.9633 -> 0.9644 at precision
0.9989; on `vitrine bench catalog --seed 7` studio copies 0.75 -> 0.975.
Opaque JPEGs without padding hash as before, but which rows had transparency or padding
is not recorded, so every hash is cleared; `duplicate_candidates` skips images without a
hash. `vitrine db upgrade` then says how many there are, and `vitrine backfill --hashes`
measures them again from their photos (no forward pass).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("UPDATE images SET phash = NULL WHERE phash IS NOT NULL")


def downgrade() -> None:
    pass  # the hashes of before cannot be made again, nor are they wanted
