"""SQLAlchemy Core description of vitrine's tables.

This module is the Python-side mirror of `db/migrations/versions/*`; the migrations are
what actually creates the schema (they also create the analyst views and functions, which
Core does not model). `tests/integration/test_db_repository.py` compares the two so they
cannot drift apart silently.

Embeddings of different models have different dimensions, so `embeddings.embedding` is
an unsized `vector`. HNSW needs a fixed dimension, so each registered model gets its own
*partial expression* index, created by `vitrine.db.repository.register_model`::

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
    Uuid,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

PHASH_BITS = 320  # vitrine.pipeline.inference.phash.BITS (db does not import pipeline's pixel code)
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
    # Migration 0013: the upload event this row records. Its idempotency key: a redelivery
    # of the same event finds this row; another event is another row, whatever its bytes.
    # Migration 0014: the label of the latest review-desk decision, kept by a trigger.
    Column(
        "person_label",
        Text,
        comment=(
            "Label of the latest review-desk decision (label_corrections), kept by a "
            "trigger; wins over the model everywhere."
        ),
    ),
    Column(
        "event_id",
        Text,
        nullable=False,
        unique=True,
        server_default=text("('uuid:'::text || gen_random_uuid())"),
        comment=(
            "The upload event this row records: a redelivery of the same event finds this "
            "row (docs/sql.md, Listings and upload events)."
        ),
    ),
    CheckConstraint(
        "status IN ('pending', 'processing', 'done', 'failed')",
        name="status",
    ),
    Index(None, "sha256"),
    Index(None, "merchant_id", "uri"),
    Index(None, "merchant_id", "created_at"),
    Index(None, "sku", postgresql_ops={"sku": "text_pattern_ops"}),
    Index(None, "status"),
    Index(
        "images_phash_hnsw_idx",
        "phash",
        postgresql_using="hnsw",
        postgresql_ops={"phash": "bit_hamming_ops"},
    ),
    comment=(
        "One row per upload event (a listing's image), unique on event_id; the same bytes "
        "under another SKU or merchant are another row."
    ),
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
    # Migration 0014: "none of our categories" (pipeline/unknown.py).
    Column(
        "unknown_score",
        REAL,
        comment=(
            "How far the photo lies from every class the model knows (higher: further); "
            "NULL: made before it was measured."
        ),
    ),
    Column(
        "unknown",
        Boolean,
        comment=(
            "unknown_score past the model's calibrated threshold: none of the model's categories."
        ),
    ),
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
    Column("name", Text, nullable=False),
    Column("token_sha256", LargeBinary, nullable=False, unique=True),
    Column("merchant_id", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("revoked_at", DateTime(timezone=True)),
    CheckConstraint("octet_length(token_sha256) = 32", name="token_sha256"),
    CheckConstraint("name <> ''", name="name"),
    # 0012: a name is unique among live clients, so a revoked one's name can be reused.
    Index(
        "api_clients_live_name_idx",
        "name",
        unique=True,
        postgresql_where=text("revoked_at IS NULL"),
    ),
    comment=(
        "Bearer-token clients of the HTTP API; only the SHA-256 of each token is stored. "
        "merchant_id NULL: a platform client (any merchant)."
    ),
)

# Created by migration 0012: review-desk sessions (the SHA-256 of the cookie's random id).
desk_sessions = Table(
    "desk_sessions",
    metadata,
    Column("id_sha256", LargeBinary, primary_key=True),
    Column(
        "client_id",
        Integer,
        ForeignKey("api_clients.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
    CheckConstraint("octet_length(id_sha256) = 32", name="id_sha256"),
    comment=(
        "Review-desk logins: the SHA-256 of the session id in the browser's cookie, "
        "the API client it acts as, and when it expires."
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
    Column(
        "action_id",
        Uuid,
        comment=(
            "What one desk action decided (a bulk approval is one action); undo removes the "
            "latest action of a person."
        ),
    ),
    CheckConstraint("action IN ('approve', 'relabel')", name="action"),
    Index(None, "image_id"),
    Index("label_corrections_decided_by_idx", "decided_by", "decided_at"),
    comment=(
        "Review-desk decisions: approve keeps the label, relabel corrects it; read by "
        "vitrine train --corrections."
    ),
)

# Created by migration 0016: near-duplicate pairs, each once, as rows (the view
# `duplicate_candidates` probes the hash index per image; a desk page reads this table).
duplicate_pairs = Table(
    "duplicate_pairs",
    metadata,
    Column("image_id", BigInteger, ForeignKey("images.id", ondelete="CASCADE"), nullable=False),
    Column(
        "other_image_id", BigInteger, ForeignKey("images.id", ondelete="CASCADE"), nullable=False
    ),
    Column("reason", Text, nullable=False),
    Column("distance", Integer, nullable=False),
    Column("found_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("image_id", "other_image_id"),
    CheckConstraint("image_id < other_image_id", name="order"),
    CheckConstraint("reason IN ('sha256', 'phash')", name="reason"),
    Index(None, "other_image_id"),
    comment=(
        "Near-duplicate pairs, each once (image_id < other_image_id): the same bytes "
        "(sha256, distance 0) or perceptual hashes at most the view's bits apart (phash). "
        "Added by the workers as they finish images."
    ),
)

# Created by migration 0016: review-desk verdicts on pairs (api/desk_pairs.py): two
# listing images that look alike, or a review photo against its listing.
pair_decisions = Table(
    "pair_decisions",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("image_id", BigInteger, ForeignKey("images.id", ondelete="CASCADE"), nullable=False),
    Column("other_image_id", BigInteger, ForeignKey("images.id", ondelete="CASCADE")),
    Column("review_id", BigInteger, ForeignKey("reviews.id", ondelete="CASCADE")),
    Column("decision", Text, nullable=False),
    Column("delisted_image_id", BigInteger),
    Column("action_id", Uuid, nullable=False),
    Column("decided_by", Text, nullable=False),
    Column("decided_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(
        "(kind = 'duplicate' AND other_image_id > image_id AND review_id IS NULL"
        " AND decision IN ('not_duplicate', 'same_product', 'delist_one'))"
        " OR (kind = 'review' AND review_id IS NOT NULL AND other_image_id IS NULL"
        " AND decision IN ('matches', 'does_not_match'))",
        name="kind",
    ),
    CheckConstraint(
        "(decision = 'delist_one') = (delisted_image_id IS NOT NULL)"
        " AND (delisted_image_id IS NULL OR delisted_image_id IN (image_id, other_image_id))",
        name="delisted",
    ),
    Index(
        "pair_decisions_duplicate_key",
        "image_id",
        "other_image_id",
        unique=True,
        postgresql_where=text("kind = 'duplicate'"),
    ),
    Index(
        "pair_decisions_review_key",
        "review_id",
        unique=True,
        postgresql_where=text("kind = 'review'"),
    ),
    Index("pair_decisions_other_image_id_idx", "other_image_id"),
    Index(
        "pair_decisions_delisted_idx",
        "delisted_image_id",
        postgresql_where=text("delisted_image_id IS NOT NULL"),
    ),
    Index("pair_decisions_decided_by_idx", "decided_by", "decided_at"),
    comment=(
        "Review-desk verdicts on pairs: near-duplicates (not_duplicate, same_product, "
        "delist_one) and review photos against their listing (matches, does_not_match). "
        "A decided pair leaves the desk's queues."
    ),
)

# Created by migration 0009: one row per shopper's review photo of a listing (merchant_id
# + sku). The worker (`vitrine.review`) stores the photo's prediction, the listing's class
# and the match score to the listing's images; the view `review_mismatches` judges them.
reviews = Table(
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
