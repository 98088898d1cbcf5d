"""SQLAlchemy Core description of vitrine's tables.

This module is the Python-side mirror of `db/migrations/versions/*`; the migrations are
what actually creates the schema (they also create the analyst views and functions, which
Core does not model). `tests/integration/test_db_repository.py` compares the two so they
cannot drift apart silently.

Embeddings of different models have different dimensions, so `embeddings.embedding` is
an unsized `vector`. HNSW needs a fixed dimension, so each registered model gets its own
*partial expression* index, created by `db.repository.register_model`::

    CREATE INDEX embeddings_hnsw_m<id> ON embeddings
        USING hnsw ((embedding::vector(<dim>)) vector_cosine_ops) WHERE model_id = <id>

A query uses it only when it repeats that expression and names the model as a literal:
`WHERE e.model_id = <id> ORDER BY e.embedding::vector(<dim>) <=> <query> LIMIT k`.
The cast also acts as a dimension guard: once the index exists, storing a vector of the
wrong size for that model fails.
"""

from __future__ import annotations

from pgvector.sqlalchemy import BIT, VECTOR
from sqlalchemy import (
    REAL,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from db.schema_reviews import reviews_table

PHASH_BITS = 320  # pipeline.phash.BITS (db does not import pipeline's pixel code)
IMAGE_STATUSES: tuple[str, ...] = ("pending", "processing", "done", "failed")

NAMING_CONVENTION = {
    "ix": "%(table_name)s_%(column_0_N_name)s_idx",
    "uq": "%(table_name)s_%(column_0_N_name)s_key",
    "ck": "%(table_name)s_%(constraint_name)s_check",
    "fk": "%(table_name)s_%(column_0_name)s_fkey",
    "pk": "%(table_name)s_pkey",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)
_DECLARED = (
    "Category the merchant declared, as sent; compared case-insensitively to the model's "
    "labels by view label_mismatches."
)


models = Table(
    "models",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("key", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("version", Text, nullable=False),
    Column("embedding_dim", Integer, nullable=False),
    Column("labels", JSONB, nullable=False),
    Column("spec", JSONB, nullable=False),
    Column("path", Text, nullable=False),
    Column("is_active", Boolean, nullable=False, server_default=false()),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("key"),
    CheckConstraint("embedding_dim > 0", name="embedding_dim"),
    # At most one active model: a partial unique index over a constant-true column.
    Index("models_one_active_idx", "is_active", unique=True, postgresql_where=text("is_active")),
    comment="Registered CNN models (key = name@version); at most one is active.",
)

images = Table(
    "images",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("merchant_id", Text, nullable=False),
    Column("sku", Text),
    Column("uri", Text, nullable=False),
    Column("sha256", Text),
    Column("width", Integer),
    Column("height", Integer),
    Column("format", Text),
    Column("status", Text, nullable=False, server_default=text("'pending'")),
    Column("error", Text),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("processed_at", DateTime(timezone=True)),
    # The product's perceptual hash (pipeline/phash.py), compared by Hamming distance.
    Column(
        "phash",
        BIT(PHASH_BITS),
        comment=(
            "Perceptual hash of the product (pipeline/phash.py): 144 shape + 170 colour bits; "
            "compare with <~> (Hamming distance). NULL: not hashed."
        ),
    ),
    Column("declared_label", Text, comment=_DECLARED),  # migration 0009
    # The idempotency key of an upload: the same merchant sending the same URI again
    # refers to the same row.
    UniqueConstraint("merchant_id", "uri"),
    CheckConstraint(
        "status IN ('pending', 'processing', 'done', 'failed')",
        name="status",
    ),
    Index(None, "sha256"),
    Index(None, "merchant_id", "created_at"),
    Index(None, "status"),
    Index(
        "images_phash_hnsw_idx",
        "phash",
        postgresql_using="hnsw",
        postgresql_ops={"phash": "bit_hamming_ops"},
    ),
    comment="One row per merchant upload, unique on (merchant_id, uri).",
)

_NULL = "(NULL: none declared, not a label, or copied)"
predictions = Table(
    "predictions",
    metadata,
    Column("image_id", BigInteger, ForeignKey("images.id", ondelete="CASCADE"), nullable=False),
    Column("model_id", Integer, ForeignKey("models.id"), nullable=False),
    Column("label", Text, nullable=False),
    Column("label_index", Integer, nullable=False),
    Column("confidence", REAL, nullable=False),
    Column("top_k", JSONB, nullable=False),
    # Migration 0011: what the model thinks of the merchant's declared category.
    Column("declared_score", REAL, comment=f"Probability of the declared category {_NULL}."),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("image_id", "model_id"),
    # label_counts / "how many shoes" filter by model, then group by label.
    Index(None, "model_id", "label"),
    comment="Label and top-k scores per (image, model).",
)

embeddings = Table(
    "embeddings",
    metadata,
    Column("image_id", BigInteger, ForeignKey("images.id", ondelete="CASCADE"), nullable=False),
    Column("model_id", Integer, ForeignKey("models.id"), nullable=False),
    Column("embedding", VECTOR(), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # The image's merchant, copied by the `embeddings_merchant` trigger on insert, so one
    # merchant's vectors are one range of the covering index below (exact search within
    # a merchant, migration 0003).
    Column("merchant_id", Text, nullable=False),
    PrimaryKeyConstraint("image_id", "model_id"),
    # Per-model counts and backfill anti-joins; the HNSW indexes are per model and
    # are created at registration time (see module docstring), not here.
    Index(None, "model_id", "image_id"),
    Index(None, "model_id", "merchant_id", postgresql_include=["image_id", "embedding"]),
    comment=(
        "Embedding per (image, model); vector size = models.embedding_dim; "
        "one HNSW index embeddings_hnsw_m<model id> per model."
    ),
)

# Created by migration 0002 with the group roles; see docs/roles.md. Row-level security
# reads it through vitrine_merchant_scope(): a login listed here sees only its merchants,
# whatever it sets vitrine.merchant_id to.
merchant_logins = Table(
    "merchant_logins",
    metadata,
    Column("login", Text, nullable=False),
    Column("merchant_id", Text, nullable=False),
    PrimaryKeyConstraint("login", "merchant_id"),
    comment="Binds a merchant login (session_user) to the merchants it may see.",
)

# Created by migration 0006: clients of the HTTP API. Only a token's SHA-256 is stored.
api_clients = Table(
    "api_clients",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", Text, nullable=False, unique=True),
    Column("token_sha256", LargeBinary, nullable=False, unique=True),
    Column("merchant_id", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("revoked_at", DateTime(timezone=True)),
    CheckConstraint("octet_length(token_sha256) = 32", name="token_sha256"),
    CheckConstraint("name <> ''", name="name"),
    comment=(
        "Bearer-token clients of the HTTP API; only the SHA-256 of each token is stored. "
        "merchant_id NULL: a platform client (any merchant)."
    ),
)

# Created by migration 0007: listing-photo quality per image (pipeline/quality.py), read
# by the view `quality_issues` against thresholds from the settings vitrine.quality_*.
image_quality = Table(
    "image_quality",
    metadata,
    Column("image_id", BigInteger, ForeignKey("images.id", ondelete="CASCADE"), nullable=False),
    Column("longest_side_px", Integer, nullable=False),
    Column("white_background_share", REAL, nullable=False),
    Column("fill_ratio", REAL),
    Column("object_span", REAL),
    Column("touches_border", Boolean),
    Column("sharpness", REAL, nullable=False),
    Column("highlight_luminance", REAL, nullable=False),
    Column("object_luminance", REAL),
    Column("measured_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("image_id"),
    comment=(
        "Listing-photo quality measured per image (pipeline/quality.py); object figures "
        "NULL where the backdrop is not plain."
    ),
)

# Created by migration 0008: one row per `vitrine forget`, kept after the data is gone.
# `subject` is the merchant id or image id as text, on purpose not a key to join on.
erasures = Table(
    "erasures",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("scope", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("db_user", Text, nullable=False, server_default=text("SESSION_USER")),
    Column("os_user", Text),
    Column("images_deleted", Integer, nullable=False),
    Column("files_deleted", Integer, nullable=False),
    Column("erased_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("scope IN ('merchant', 'image')", name="scope"),
    CheckConstraint("subject <> ''", name="subject"),
    CheckConstraint("images_deleted >= 0 AND files_deleted >= 0", name="counts"),
    comment=(
        "Audit trail of vitrine forget: who (database login, OS user), what (merchant or "
        "image), when, how many images and files were deleted."
    ),
)


# Created by migration 0010: review-desk decisions (api/desk.py), one row per approve or
# relabel; `label` is the label a person vouched for, read by `vitrine train --corrections`.
label_corrections = Table(
    "label_corrections",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("image_id", BigInteger, ForeignKey("images.id", ondelete="CASCADE"), nullable=False),
    Column("model_id", Integer, ForeignKey("models.id")),
    Column("action", Text, nullable=False),
    Column("label", Text, nullable=False),
    Column("previous_label", Text),
    Column("queue", Text),
    Column("decided_by", Text, nullable=False),
    Column("decided_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("action IN ('approve', 'relabel')", name="action"),
    Index(None, "image_id"),
    comment=(
        "Review-desk decisions: approve keeps the label, relabel corrects it; read by "
        "vitrine train --corrections."
    ),
)

# Created by migration 0009: shoppers' review photos (db/schema_reviews.py says what).
reviews = reviews_table(metadata)


def positive_int(value: int, what: str) -> int:
    """Return `value` if it is a plain int >= 1, else raise `ValueError` naming `what`.

    The one guard for numbers spliced into SQL text (index DDL, the analyst query
    strings) and for sizes that must be positive: `bool` is an `int` subclass and is
    refused, as is anything that is not an int (a string could carry SQL).
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return value


def hnsw_index_name(model_id: int) -> str:
    """Name of the per-model HNSW index on `embeddings`."""
    return f"embeddings_hnsw_m{int(model_id)}"


def hnsw_index_ddl(model_id: int, embedding_dim: int) -> str:
    """`CREATE INDEX` statement for one model's partial expression HNSW index."""
    mid, dim = positive_int(model_id, "model_id"), positive_int(embedding_dim, "embedding_dim")
    return (
        f"CREATE INDEX IF NOT EXISTS {hnsw_index_name(mid)} ON embeddings "
        f"USING hnsw ((embedding::vector({dim})) vector_cosine_ops) "
        f"WHERE model_id = {mid}"
    )
