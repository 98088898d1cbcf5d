"""Pure checks of db/: URL handling, generated SQL text, schema shape, migration scripts.

Nothing here needs a database server.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import os
from pathlib import Path

import numpy as np
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import UniqueConstraint
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateIndex

import vitrine.db
from tests.similar_sql import similar_raw_sql
from vitrine.db import repository as repo
from vitrine.db.engine import make_engine, normalise_url
from vitrine.db.migrate import (
    ALEMBIC_INI,
    MIGRATIONS_DIR,
    alembic_config,
    head_revision,
    revision_module,
)
from vitrine.db.repository.images import _MARK_DONE, _UPSERT_EMBEDDINGS, _UPSERT_PREDICTIONS
from vitrine.db.schema import (
    IMAGE_STATUSES,
    embeddings,
    hnsw_index_ddl,
    hnsw_index_name,
    images,
    metadata,
    models,
    positive_int,
    predictions,
)
from vitrine.db.types import ClaimedImage, ImageResult, ImageSummary, LabelInfo, ModelRow, Neighbour

DB_DIR = Path(vitrine.db.__file__).resolve().parent


# --------------------------------------------------------------------------- URLs / engine


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@h:5432/d", "postgresql+psycopg://u:p@h:5432/d"),
        ("postgres://u:p@h/d?sslmode=require", "postgresql+psycopg://u:p@h/d?sslmode=require"),
        ("POSTGRES://u@h/d", "postgresql+psycopg://u@h/d"),
        (
            "postgresql://postgres:@/postgres?host=/tmp/x/pgdata",
            "postgresql+psycopg://postgres:@/postgres?host=/tmp/x/pgdata",
        ),
        ("postgresql+psycopg://u@h/d", "postgresql+psycopg://u@h/d"),
        ("postgresql+psycopg2://u@h/d", "postgresql+psycopg2://u@h/d"),  # explicit: kept
        ("postgresql://u:p%40ss@h/d", "postgresql+psycopg://u:p%40ss@h/d"),
    ],
)
def test_normalise_url(given: str, expected: str) -> None:
    assert normalise_url(given) == expected


@pytest.mark.parametrize("bad", ["mysql://u@h/d", "sqlite:///x.db", "not a url", ""])
def test_normalise_url_rejects_other_databases(bad: str) -> None:
    with pytest.raises(ValueError):
        normalise_url(bad)


def test_make_engine_uses_psycopg3_and_pre_ping_without_connecting() -> None:
    engine = make_engine("postgres://u:p@127.0.0.1:1/d")
    try:
        assert engine.dialect.driver == "psycopg"
        assert engine.url.drivername == "postgresql+psycopg"
        assert engine.pool._pre_ping is True
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- schema


def test_tables_and_keys() -> None:
    tables = {"models", "images", "predictions", "embeddings", "merchant_logins", "api_clients"}
    tables |= {"erasures", "image_quality"}
    tables |= {"reviews"}  # 0009: shoppers' review photos
    tables |= {"label_corrections"}  # 0010: review-desk decisions
    tables |= {"desk_sessions"}  # 0012: review-desk logins kept on the server
    tables |= {"pair_decisions", "duplicate_pairs"}  # 0016: pairs at the review desk
    assert set(metadata.tables) == tables
    assert [c.name for c in predictions.primary_key.columns] == ["image_id", "model_id"]
    assert [c.name for c in embeddings.primary_key.columns] == ["image_id", "model_id"]
    uniques = {
        tuple(c.name for c in uc.columns)
        for uc in images.constraints
        if isinstance(uc, UniqueConstraint)
    }
    assert uniques == {("event_id",)}  # 0013: one row per upload event, not per (merchant, uri)
    assert images.c.status.server_default is not None
    assert IMAGE_STATUSES == ("pending", "processing", "done", "failed")
    fk = next(iter(predictions.c.image_id.foreign_keys))
    assert fk.ondelete == "CASCADE"
    # the embedding column is unsized: models of any dimension share it
    assert "VECTOR" == str(embeddings.c.embedding.type.compile(dialect=postgresql.dialect()))


def test_at_most_one_active_model_index() -> None:
    (index,) = [i for i in models.indexes if i.name == "models_one_active_idx"]
    ddl = str(CreateIndex(index).compile(dialect=postgresql.dialect()))
    assert ddl == "CREATE UNIQUE INDEX models_one_active_idx ON models (is_active) WHERE is_active"


def test_hnsw_index_ddl() -> None:
    assert hnsw_index_name(7) == "embeddings_hnsw_m7"
    assert hnsw_index_ddl(7, 128) == (
        "CREATE INDEX IF NOT EXISTS embeddings_hnsw_m7 ON embeddings "
        "USING hnsw ((embedding::vector(128)) vector_cosine_ops) WHERE model_id = 7"
    )
    for bad in [(0, 4), (1, 0), (-1, 4), (True, 4), (1, "4")]:
        with pytest.raises(ValueError):
            hnsw_index_ddl(*bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- SQL text


def test_similar_sql_is_what_an_analyst_types() -> None:
    assert repo.similar_sql(42, 10) == "SELECT * FROM similar_images(42, 10);"
    assert repo.similar_sql(42) == "SELECT * FROM similar_images(42, 10);"
    within = repo.similar_sql(42, 5, merchant_id="o'shop")
    assert within == "SELECT * FROM similar_images(42, 5, p_merchant_id => 'o''shop');"
    for bad in [(0, 10), (42, 0), (-1, 3), ("42; DROP TABLE images", 10), (42, True)]:
        with pytest.raises(ValueError):
            repo.similar_sql(*bad)  # type: ignore[arg-type]


def test_similar_raw_sql_repeats_the_index_expression() -> None:
    sql = similar_raw_sql(model_id=3, embedding_dim=128, image_id=42, k=5)
    # The planner matches the ORDER BY expression and the partial predicate against
    # `embeddings_hnsw_m3` literally: same cast, same operator, model id as a constant.
    assert "ORDER BY e.embedding::vector(128) <=> (SELECT embedding::vector(128)" in sql
    assert "WHERE e.model_id = 3 AND e.image_id <> 42" in sql
    assert sql.rstrip().endswith("LIMIT 5;")
    assert "(embedding::vector(128)) vector_cosine_ops" in hnsw_index_ddl(3, 128)
    with pytest.raises(ValueError):
        similar_raw_sql(model_id=3, embedding_dim=0, image_id=42)


def test_positive_int_is_the_one_validator() -> None:
    assert positive_int(7, "k") == 7
    for bad in [0, -1, True, False, 1.0, "3", None]:
        with pytest.raises(ValueError, match="k must be a positive int"):
            positive_int(bad, "k")  # type: ignore[arg-type]
    # no private copies left anywhere in db/
    for path in DB_DIR.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        defs = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        assert not defs & {"_positive", "_positive_int"}, path


def test_search_functions_pick_exact_or_index_plans() -> None:
    """The exact query cannot match an HNSW index (no cast, no literal model id in the
    ORDER BY); the index query repeats the index's expression exactly."""
    revision = revision_module("0003_search_and_hashes.py")
    assert "ORDER BY e.embedding <=> $1" in revision._EXACT
    assert "::vector(" not in revision._EXACT
    assert "e.merchant_id = $4" in revision._EXACT  # one range of the covering B-tree
    assert "ORDER BY e.embedding::vector(%1$s) <=> $1" in revision._ANN
    assert "WHERE e.model_id = %2$s" in revision._ANN
    # the index answer is used only when it is complete; else the exact one, never both
    assert "(SELECT count(*) FROM ann) >= $3" in revision._ANN
    assert "(SELECT count(*) FROM ann) < $3" in revision._ANN


def test_the_duplicate_threshold_is_the_hash_recipes() -> None:
    """`duplicate_candidates` (0004) pairs hashes at the distance
    `vitrine.pipeline.inference.phash` was
    measured at; 0004 edits 0003's view text, which must still hold the old threshold."""
    from vitrine.pipeline.inference.phash import DUPLICATE_BITS

    previous = revision_module("0003_search_and_hashes.py")
    current = revision_module("0004_phash_v2.py")
    assert current.DUPLICATE_BITS == DUPLICATE_BITS
    assert current.PREVIOUS_BITS == previous.DUPLICATE_BITS
    assert f"b.distance <= {previous.DUPLICATE_BITS}" in previous.DUPLICATE_CANDIDATES_VIEW


def test_arguments_are_checked_before_any_query() -> None:
    no_db = object()  # any use of the connection would raise AttributeError
    with pytest.raises(ValueError, match="page_size"):
        repo.iter_images_missing_embeddings(no_db, model_id=1, page_size=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="1-d"):
        repo.similar_to_vector(no_db, embedding=np.zeros((2, 4), dtype=np.float32))  # type: ignore[arg-type]
    assert repo.labels_for(no_db, image_ids=[]) == {}  # type: ignore[arg-type]
    assert repo.image_summaries(no_db, image_ids=[]) == {}  # type: ignore[arg-type]
    assert repo.label_counts(no_db, image_ids=[]) == []  # type: ignore[arg-type]


def test_repository_package_keeps_every_name() -> None:
    import vitrine.db.repository as package

    before_split = {
        "ClaimedImage",
        "EmbeddingRow",
        "ImageResult",
        "ModelRow",
        "Neighbour",
        "MAX_ERROR_CHARS",
        "MODELS_LOCK_KEY",
        "activate_model",
        "active_model",
        "copy_embeddings",
        "drop_hnsw_index",
        "ensure_hnsw_index",
        "images_missing_embeddings",
        "label_counts",
        "list_models",
        "mark_failed",
        "register_model",
        "save_results",
        "similar",
        "similar_sql",
        "similar_to_vector",
        "stale_images",
        "status_counts",
        "statuses",
        "upsert_pending_images",
    }
    added = {
        "ImageSummary",
        "LabelInfo",
        "find_model",
        "image_summaries",
        "iter_images_missing_embeddings",
        "labels_for",
        "model_count",
        "requeue_stale",
        "commit_times",
        "database_clock",
        "delete_merchants",
        "settled_counts",
        "claim_images",
        "known_results",
        "copy_catalog",
        "build_hnsw_index_concurrently",
        "drop_hnsw_index_concurrently",
        "ApiClient",
        "api_client_for_token",
        "create_api_client",
        "image_detail",
        "list_api_clients",
        "revoke_api_client",
        "rotate_api_client",
        "Recorded",
        "new_event_id",
        "record_uploads",
        "images_without_hash",
        "save_hashes",
        "unhashed_count",
        "create_desk_session",
        "desk_session_client",
        "end_desk_session",
        "Erasure",
        "delete_images",
        "delete_reviews",
        "image_rows_left",
        "record_erasure",
        "referenced_uris",
        "quality_issues",
        "save_quality",
        "ListingMatch",
        "ReviewRow",
        "fail_review",
        "listing_match",
        "save_review",
        "upsert_review",
        "browse",
        "corrections_for",
        "merchants",
        "queue_items",
        "readable_views",
        "record_correction",
        "photo_source",
        "CorrectedImage",
        "latest_corrections",
    }
    desk_pairs = {  # 0016: pairs, counts, bulk actions and undo at the review desk
        "PAIR_QUEUES",
        "browse_count",
        "queue_count",
        "DUPLICATE_DECISIONS",
        "REVIEW_DECISIONS",
        "LastAction",
        "delisted",
        "duplicate_pairs",
        "last_action",
        "new_action",
        "pair_count",
        "pair_history",
        "photos",
        "record_pair_decision",
        "review_listing",
        "review_pairs",
        "review_source",
        "undo_last",
        "record_duplicates",
        "drop_duplicates",
        "active_labels",
    }
    failed = {  # the desk's failed uploads and their resending
        "FailedCount",
        "ResetUpload",
        "failed_count",
        "failed_uploads",
        "resendable",
        "reset_failed",
    }
    added |= desk_pairs | failed
    assert set(package.__all__) == before_split | added
    assert len(package.__all__) == len(set(package.__all__))
    for name in package.__all__:
        assert getattr(package, name) is not None, name
    assert package.ModelRow is ModelRow and package.Neighbour is Neighbour
    assert "life cycle" in (package.__doc__ or "")


def test_batch_upserts_compile_to_on_conflict() -> None:
    dialect = postgresql.dialect()
    pred = str(_UPSERT_PREDICTIONS.compile(dialect=dialect))
    emb = str(_UPSERT_EMBEDDINGS.compile(dialect=dialect))
    assert "ON CONFLICT (image_id, model_id) DO UPDATE SET" in pred
    assert "top_k = excluded.top_k" in pred
    assert "ON CONFLICT (image_id, model_id) DO UPDATE SET embedding = excluded.embedding" in emb
    assert "unnest(CAST(:ids AS bigint[])" in str(_MARK_DONE)


def test_rows_are_frozen() -> None:
    for cls in (ModelRow, ClaimedImage, ImageResult, Neighbour, LabelInfo, ImageSummary):
        assert dataclasses.is_dataclass(cls)
        assert getattr(cls, "__dataclass_params__").frozen  # noqa: B009


def test_db_imports_only_pipeline_types_from_the_project() -> None:
    ours = {"db", "pipeline", "worker", "bench", "models", "tests"}
    for path in DB_DIR.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in ours and top != "db":
                    assert name == "vitrine.pipeline.types", f"{path}: imports {name}"


# --------------------------------------------------------------------------- migrations


def test_single_head_and_ini_inside_migrations() -> None:
    assert ALEMBIC_INI.parent == MIGRATIONS_DIR == DB_DIR / "migrations"
    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_heads() == ["0017"] == [head_revision()]


def test_offline_sql_from_another_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the config must not depend on the CWD
    buf = io.StringIO()
    cfg = alembic_config("postgresql://u@h/d")
    cfg.output_buffer = buf
    command.upgrade(cfg, "head", sql=True)
    sql = buf.getvalue()
    assert "CREATE EXTENSION IF NOT EXISTS vector" in sql
    assert "CREATE UNIQUE INDEX models_one_active_idx ON models (is_active) WHERE is_active" in sql
    assert "CONSTRAINT images_merchant_id_uri_key UNIQUE (merchant_id, uri)" in sql
    # 0013: identity by event; 0014: the effective label, in the search too
    assert "ALTER TABLE images DROP CONSTRAINT images_merchant_id_uri_key" in sql
    assert "ADD CONSTRAINT images_event_id_key UNIQUE (event_id)" in sql
    assert "CREATE TRIGGER label_corrections_person_label" in sql
    assert (
        "coalesce(i.person_label, CASE WHEN p.unknown THEN 'unknown' ELSE p.label END) = $5" in sql
    )
    assert "embedding VECTOR NOT NULL" in sql
    assert "CREATE FUNCTION similar_images(p_image_id bigint, p_k integer DEFAULT 10)" in sql
    assert "CREATE FUNCTION similar_to_vector(p_vec vector, p_k integer DEFAULT 10)" in sql
    # 0003: filtered search, the hash column, embeddings' merchants filled in plain SQL
    assert "CREATE FUNCTION vitrine_knn(p_vec vector" in sql
    assert "ALTER TABLE images ADD COLUMN phash bit(320)" in sql
    assert "UPDATE embeddings e SET merchant_id = i.merchant_id" in sql
    for view in ("active_model", "image_labels", "duplicate_candidates"):
        assert f"CREATE VIEW {view} AS" in sql
    # 0004: the second hash recipe
    assert "UPDATE images SET phash = NULL WHERE phash IS NOT NULL" in sql
    assert "CREATE OR REPLACE VIEW duplicate_candidates AS" in sql
    assert "AND b.distance <= 30" in sql
    # 0005: per-merchant exact search from the covering index alone
    assert "INCLUDE (image_id, embedding)" in sql
    assert sql.count("CREATE OR REPLACE FUNCTION vitrine_knn(") == 2  # 0005, 0014
    assert "SET max_parallel_workers_per_gather = 0" in sql
    # 0006: API clients, token hashes only, kept from the analyst
    assert "token_sha256 bytea NOT NULL" in sql
    assert "REVOKE ALL ON api_clients, api_clients_id_seq FROM vitrine_analyst" in sql
    assert sql.count("SET hnsw.iterative_scan = 'strict_order'") == 2
    # 0007: listing-photo quality, thresholds read from settings at query time
    assert "CONSTRAINT image_quality_pkey PRIMARY KEY (image_id)" in sql
    assert "CREATE VIEW quality_issues AS" in sql
    assert "current_setting('vitrine.quality_min_side', true)" in sql
    assert "CREATE POLICY image_quality_merchant ON image_quality FOR SELECT" in sql
    # 0008: the erasure audit trail, readable by the analyst only
    assert "db_user text NOT NULL DEFAULT session_user" in sql
    assert "CREATE POLICY erasures_analyst ON erasures FOR SELECT TO vitrine_analyst" in sql
    # 0009: declared categories, review photos, the two views and their settings
    assert "ALTER TABLE images ADD COLUMN declared_label text" in sql
    assert "CONSTRAINT reviews_merchant_id_sku_uri_key UNIQUE (merchant_id, sku, uri)" in sql
    assert "current_setting('vitrine.mismatch_min_confidence', true)" in sql
    # 0011: wrong categories by the declared class's probability
    assert "ALTER TABLE predictions ADD COLUMN declared_score real" in sql
    assert "current_setting('vitrine.mismatch_max_declared_score', true)" in sql
    assert "current_setting('vitrine.review_min_match', true)" in sql
    assert "CREATE POLICY reviews_merchant ON reviews FOR SELECT TO vitrine_merchant" in sql
    # 0010: review-desk decisions, written by the owner, read by the analyst and merchants
    assert "CONSTRAINT label_corrections_action_check CHECK (action IN" in sql
    assert "CREATE POLICY label_corrections_merchant ON label_corrections FOR SELECT" in sql
    # 0016: verdicts on pairs, one per pair, read by the analyst and the pair's merchant
    assert "CREATE UNIQUE INDEX pair_decisions_duplicate_key ON pair_decisions" in sql
    assert "CREATE POLICY pair_decisions_merchant ON pair_decisions FOR SELECT" in sql
    assert "ALTER TABLE label_corrections ADD COLUMN action_id uuid" in sql
    # format() placeholders survive SQLAlchemy's %-escaping
    assert "e.embedding::vector(%1$s) <=> $1" in sql
    # 0002: group roles and row-level security, all plain SQL, so offline scripts work too
    assert "format('CREATE ROLE %I NOLOGIN', v_role)" in sql
    assert "CREATE TABLE merchant_logins" in sql
    assert "ALTER TABLE images ENABLE ROW LEVEL SECURITY" in sql
    assert "CREATE POLICY images_merchant ON images FOR SELECT TO vitrine_merchant" in sql
    assert "EXECUTE 'ALTER VIEW image_labels SET (security_invoker = true)';" in sql
    assert os.getcwd() == str(tmp_path)
