"""Perceptual hashes are measured again: from the one working copy every measure reads.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06

The hash used to make its own 256 px copy of the decoded photo (a box average of the
full image, a transparent PNG composited onto white at full size first). The worker now
decodes once, makes a 384 px copy for the unknown detector's view and from it one
working copy, RGB on white with its longest side 256 px (`pipeline/inference/flatten.py`,
`working_copy`), that the model input, the hash and the quality figures all read
(`pipeline/inference/preprocess.py`, `measured_copy`). The pixels are resampled
differently (reduce, then bilinear; a cut-out resized with its alpha premultiplied), so
a stored hash and one made now of the same photo differ by a few bits: near-duplicate
pairs between old and new rows would be judged on two recipes. Every hash is cleared,
as 0015 did; `duplicate_candidates` skips images without a hash, `vitrine db upgrade`
says how many there are, and `vitrine backfill --hashes` measures them again from their
photos (no forward pass; their pairs are dropped and found again).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | Sequence[str] | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("UPDATE images SET phash = NULL WHERE phash IS NOT NULL")


def downgrade() -> None:
    pass  # the hashes of before cannot be made again, nor are they wanted
