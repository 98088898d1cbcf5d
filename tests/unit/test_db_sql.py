"""Pure checks of db/: URL handling, generated SQL text, schema shape, migration scripts.

Nothing here needs a database server.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import os
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import UniqueConstraint
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateIndex

from db import repository as repo
from db.engine import make_engine, normalise_url
from db.migrate import ALEMBIC_INI, MIGRATIONS_DIR, alembic_config, head_revision
from db.schema import (
    IMAGE_STATUSES,
    embeddings,
    hnsw_index_ddl,
    hnsw_index_name,
    images,
    metadata,
    models,
    predictions,
)
from db.types import ClaimedImage, ImageResult, ModelRow, Neighbour

DB_DIR = Path(repo.__file__).resolve().parent


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
    assert set(metadata.tables) == {"models", "images", "predictions", "embeddings"}
    assert [c.name for c in predictions.primary_key.columns] == ["image_id", "model_id"]
    assert [c.name for c in embeddings.primary_key.columns] == ["image_id", "model_id"]
    uniques = {
        tuple(c.name for c in uc.columns)
        for uc in images.constraints
        if isinstance(uc, UniqueConstraint)
    }
    assert ("merchant_id", "uri") in uniques
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
    for bad in [(0, 10), (42, 0), (-1, 3), ("42; DROP TABLE images", 10), (42, True)]:
        with pytest.raises(ValueError):
            repo.similar_sql(*bad)  # type: ignore[arg-type]


def test_similar_raw_sql_repeats_the_index_expression() -> None:
    sql = repo.similar_raw_sql(model_id=3, embedding_dim=128, image_id=42, k=5)
    # The planner matches the ORDER BY expression and the partial predicate against
    # `embeddings_hnsw_m3` literally: same cast, same operator, model id as a constant.
    assert "ORDER BY e.embedding::vector(128) <=> (SELECT embedding::vector(128)" in sql
    assert "WHERE e.model_id = 3 AND e.image_id <> 42" in sql
    assert sql.rstrip().endswith("LIMIT 5;")
    assert "(embedding::vector(128)) vector_cosine_ops" in hnsw_index_ddl(3, 128)
    with pytest.raises(ValueError):
        repo.similar_raw_sql(model_id=3, embedding_dim=0, image_id=42)


def test_batch_upserts_compile_to_on_conflict() -> None:
    dialect = postgresql.dialect()
    pred = str(repo._UPSERT_PREDICTIONS.compile(dialect=dialect))
    emb = str(repo._UPSERT_EMBEDDINGS.compile(dialect=dialect))
    assert "ON CONFLICT (image_id, model_id) DO UPDATE SET" in pred
    assert "top_k = excluded.top_k" in pred
    assert "ON CONFLICT (image_id, model_id) DO UPDATE SET embedding = excluded.embedding" in emb
    assert "unnest(CAST(:ids AS bigint[])" in str(repo._MARK_DONE)


def test_rows_are_frozen() -> None:
    for cls in (ModelRow, ClaimedImage, ImageResult, Neighbour):
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
                    assert name == "pipeline.types", f"{path}: imports {name}"


# --------------------------------------------------------------------------- migrations


def test_single_head_and_ini_inside_migrations() -> None:
    assert ALEMBIC_INI.parent == MIGRATIONS_DIR == DB_DIR / "migrations"
    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_heads() == ["0001"] == [head_revision()]


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
    assert "embedding VECTOR NOT NULL" in sql
    assert "CREATE FUNCTION similar_images(p_image_id bigint, p_k integer DEFAULT 10)" in sql
    assert "CREATE FUNCTION similar_to_vector(p_vec vector, p_k integer DEFAULT 10)" in sql
    for view in ("active_model", "image_labels", "duplicate_candidates"):
        assert f"CREATE VIEW {view} AS" in sql
    assert sql.count("SET hnsw.iterative_scan = 'strict_order'") == 2
    # format() placeholders survive SQLAlchemy's %-escaping
    assert "e.embedding::vector(%1$s) <=> $1" in sql
    assert os.getcwd() == str(tmp_path)
