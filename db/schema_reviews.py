"""The `reviews` table of migration 0009, kept beside `db.schema` (which registers it on
its metadata) so that neither module outgrows the size limit.

One row per shopper's review photo of a listing (merchant_id + sku). The worker
(`vitrine.review`) stores the photo's prediction, the listing's class and the match
score to the listing's images; the view `review_mismatches` judges them.
"""

from __future__ import annotations

from sqlalchemy import (
    REAL,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)


def reviews_table(metadata: MetaData) -> Table:
    """`reviews`, defined on `metadata` (that of `db.schema`)."""
    return Table(
        "reviews",
        metadata,
        Column("id", BigInteger, primary_key=True),
        Column("merchant_id", Text, nullable=False),
        Column("sku", Text, nullable=False),
        Column("review_ref", Text),
        Column("uri", Text, nullable=False),
        Column("status", Text, nullable=False, server_default=text("'pending'")),
        Column("error", Text),
        Column("label", Text),
        Column("confidence", REAL),
        Column("listing_label", Text),
        Column("match_score", REAL),
        Column("model_id", Integer, ForeignKey("models.id")),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("processed_at", DateTime(timezone=True)),
        UniqueConstraint("merchant_id", "sku", "uri"),
        CheckConstraint("status IN ('pending', 'done', 'failed')", name="status"),
        comment=(
            "Shoppers' review photos of a listing (merchant_id, sku): prediction, the "
            "listing's class and the match score to its images."
        ),
    )
