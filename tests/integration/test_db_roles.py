"""Migration 0002's group roles: the privileges each holds, the worker and the analyst.

Each test logs in as login roles granted the group roles, on a private PostgreSQL 18 +
pgvector server, and runs the real statements. Merchant row-level security is in
test_db_roles_merchant.py, the migration as a step (create, downgrade, no CREATEROLE) in
test_db_roles_migration.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import sqlalchemy.exc
from sqlalchemy import text

from tests.integration._roles import (
    GROUPS,
    MERCHANT_VIEWS,
    RoleDb,
    gallery,
    grants,
    group_roles,
    invoker_views,
    refused,
    register,
    result,
    role_db,
    run,
    throwaway_server,
)
from vitrine.db import repository as repo
from vitrine.db.migrate import head_revision, schema_revision
from vitrine.pipeline.types import Upload

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pg_server() -> Iterator[str]:
    with throwaway_server() as url:
        yield url


@pytest.fixture()
def db(pg_server: str) -> Iterator[RoleDb]:
    with role_db(pg_server) as d:
        yield d


def _cols(obj: str, privilege: str, columns: str) -> set[str]:
    return {f"{obj}:{privilege}({c})" for c in columns.split()}


SHOP_FLOOR_VIEWS = ("label_mismatches", "review_mismatches")
SEARCH_FUNCTIONS = ("similar_images", "similar_to_vector", "vitrine_knn", "vitrine_merchant_scope")
READ_ALL = {f"{r}:SELECT" for r in ("models", "images", "predictions", "embeddings")} | {
    f"{r}:SELECT" for r in ("alembic_version", "active_model", "image_labels")
}
EXPECTED = {
    "vitrine_worker": READ_ALL
    | {"duplicate_candidates:SELECT", "predictions:INSERT", "embeddings:INSERT"}
    | {"images_id_seq:USAGE", "similar_images:EXECUTE", "similar_to_vector:EXECUTE"}
    | {"vitrine_knn:EXECUTE", "schema:USAGE"}
    | _cols("images", "INSERT", "merchant_id uri sku event_id")  # event_id: 0013
    | _cols("images", "UPDATE", "sku status error attempts sha256 width height format")
    | _cols("images", "UPDATE", "updated_at processed_at phash")
    | _cols("predictions", "UPDATE", "label label_index confidence top_k declared_score created_at")
    | _cols("predictions", "UPDATE", "unknown_score unknown")  # 0014
    | _cols("embeddings", "UPDATE", "embedding created_at")
    # listing-photo quality (0007): measurements written, the view read
    | {"image_quality:SELECT", "image_quality:INSERT", "quality_issues:SELECT"}
    | _cols("image_quality", "UPDATE", "longest_side_px white_background_share fill_ratio")
    | _cols("image_quality", "UPDATE", "object_span touches_border sharpness measured_at")
    | _cols("image_quality", "UPDATE", "highlight_luminance object_luminance")
    # shop floor (0009): declared categories and review photos written, views not read
    | _cols("images", "INSERT", "declared_label")
    | _cols("images", "UPDATE", "declared_label")
    | {"reviews:SELECT", "reviews_id_seq:USAGE"}
    | _cols("reviews", "INSERT", "merchant_id sku review_ref uri")
    | _cols("reviews", "UPDATE", "review_ref status error label confidence listing_label")
    | _cols("reviews", "UPDATE", "match_score model_id processed_at")
    # near-duplicate pairs (0016): added as images finish, dropped when hashes are remade
    | {"duplicate_pairs:SELECT", "duplicate_pairs:INSERT", "duplicate_pairs:DELETE"},
    "vitrine_analyst": READ_ALL
    | {"duplicate_candidates:SELECT", "merchant_logins:SELECT", "schema:USAGE"}
    | {f"{f}:EXECUTE" for f in (*SEARCH_FUNCTIONS, "vitrine_embedding_merchant")}
    | {"vitrine_person_label:EXECUTE"}  # a trigger function (0014), as the one above
    | {"erasures:SELECT"}  # the audit trail of vitrine forget (0008): read, never written
    | {"label_corrections:SELECT"}  # review-desk decisions (0010): the owner writes
    | {f"{r}:SELECT" for r in ("reviews", *SHOP_FLOOR_VIEWS)}  # 0009
    | {"image_quality:SELECT", "quality_issues:SELECT"}
    | {f"{r}:SELECT" for r in ("duplicate_pairs", "pair_decisions", "delisted_images")},  # 0016
    "vitrine_merchant": (READ_ALL - {"alembic_version:SELECT"})
    | {"duplicate_candidates:SELECT", "merchant_logins:SELECT", "schema:USAGE"}
    | {f"{f}:EXECUTE" for f in SEARCH_FUNCTIONS}
    | {"image_quality:SELECT", "quality_issues:SELECT"}  # own rows: policy, invoker view
    | {"label_corrections:SELECT"}  # own images' decisions (0010): its desk queues
    | {f"{r}:SELECT" for r in ("reviews", *SHOP_FLOOR_VIEWS)}  # own rows (0009)
    | {f"{r}:SELECT" for r in ("duplicate_pairs", "pair_decisions", "delisted_images")},  # 0016
}


def test_each_group_holds_exactly_its_privileges(db: RoleDb) -> None:
    assert group_roles(db) == dict.fromkeys(GROUPS, False)  # NOLOGIN
    for role, expected in EXPECTED.items():
        if role == "vitrine_merchant" and not invoker_views(db.admin):  # PostgreSQL 14
            views = (*MERCHANT_VIEWS, "quality_issues", *SHOP_FLOOR_VIEWS, "delisted_images")
            expected = expected - {f"{v}:SELECT" for v in views}
        assert grants(db, role) == expected, role


def test_every_object_is_covered_and_invoker_rights(db: RoleDb) -> None:
    """Guards for later migrations: new objects need grants, RLS, invoker rights."""
    ours = "relnamespace = current_schema()::regnamespace"
    unreadable = run(
        db.admin,
        f"SELECT relname FROM pg_class WHERE {ours} AND relkind IN ('r', 'v', 'm', 'p') "
        "AND NOT has_table_privilege('vitrine_analyst', oid, 'SELECT')",
    )
    # token hashes (0006) and desk session hashes (0012): the owner's alone
    assert sorted(unreadable) == [("api_clients",), ("desk_sessions",)]
    definer = run(
        db.admin,
        "SELECT p.proname FROM pg_proc p WHERE p.pronamespace = current_schema()::regnamespace "
        "AND (p.prosecdef OR NOT has_function_privilege('vitrine_analyst', p.oid, 'EXECUTE')) "
        "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')",
    )
    assert definer == []  # SECURITY DEFINER would run as the owner and bypass RLS
    views = run(
        db.admin, f"SELECT relname, reloptions FROM pg_class WHERE {ours} AND relkind = 'v'"
    )
    invoker = ["security_invoker=true"] if invoker_views(db.admin) else None
    assert views and all(opts == invoker for _, opts in views), views
    unprotected = run(
        db.admin,
        f"SELECT DISTINCT c.relname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid "
        f"WHERE c.{ours} AND c.relkind = 'r' AND a.attname IN ('merchant_id', 'image_id') "
        "AND NOT (c.relrowsecurity AND NOT c.relforcerowsecurity)",
    )
    assert unprotected == []


def test_worker_runs_the_pipeline_and_nothing_else(db: RoleDb) -> None:
    with db.admin.begin() as conn:
        model_id = register(conn)  # models are the owner's: `vitrine db upgrade`, `models add`
    worker = db.login("t_worker", "vitrine_worker")
    ups = [Upload(f"s3://m-1/{n}.png", "m-1", f"sku{n}", event_id=f"e{n}") for n in range(3)]
    ups.append(Upload("s3://m-2/0.png", "m-2", event_id="e-m2"))
    ids = run(worker, lambda c: repo.upsert_pending_images(c, uploads=ups))
    assert run(worker, lambda c: repo.upsert_pending_images(c, uploads=ups[:1])) == ids[:1]
    stuck = run(worker, lambda c: repo.requeue_stale(c, older_than_s=0, limit=10))  # reaper
    assert [i for i, _ in stuck] == ids
    claimed = run(worker, lambda c: [repo.claim_images(c, image_ids=[i]).get(i) for i in ids])
    assert [c.merchant_id for c in claimed] == ["m-1", "m-1", "m-1", "m-2"]
    vectors: list[list[float]] = [[1, 0, 0, 0], [0.9, 0.1, 0, 0], [0, 1, 0, 0]]
    done = [result(i, model_id, v) for i, v in zip(ids, vectors, strict=False)]
    run(worker, lambda c: repo.save_results(c, results=done))
    run(worker, lambda c: repo.save_results(c, results=done[:1]))  # redelivery: DO UPDATE
    run(worker, lambda c: repo.mark_failed(c, image_id=ids[3], error="not an image"))

    counts = run(worker, lambda c: repo.status_counts(c))
    assert counts == {"pending": 0, "processing": 0, "done": 3, "failed": 1}
    assert set(run(worker, lambda c: repo.labels_for(c, image_ids=ids))) == set(ids[:3])
    near = run(worker, lambda c: repo.similar(c, image_id=ids[0], k=5))
    assert [n.image_id for n in near] == [ids[1], ids[2]]
    within = run(worker, lambda c: repo.similar(c, image_id=ids[0], merchant_id="m-1"))
    assert [n.image_id for n in within] == [ids[1], ids[2]]
    assert len(run(worker, lambda c: repo.similar_to_vector(c, embedding=[1, 0, 0, 0]))) == 3
    assert run(worker, lambda c: repo.active_model(c)).id == model_id
    assert run(worker, schema_revision) == head_revision()

    for statement in (
        "DELETE FROM images",
        "DELETE FROM predictions",
        "TRUNCATE images",
        "DROP TABLE embeddings",
        "CREATE TABLE scratch (x int)",
        "ALTER TABLE images ADD COLUMN x int",
        "CREATE INDEX ON images (sku)",
        "UPDATE models SET is_active = false",
        f"UPDATE images SET merchant_id = 'm-2' WHERE id = {ids[0]}",
        f"UPDATE images SET uri = 'elsewhere' WHERE id = {ids[0]}",
        f"UPDATE predictions SET model_id = 99 WHERE image_id = {ids[0]}",
        "SELECT * FROM merchant_logins",
        "SELECT nextval('models_id_seq')",
    ):
        refused(worker, statement)
    refused(worker, lambda c: register(c, "2"))
    refused(worker, lambda c: repo.activate_model(c, key="fashion-cnn@1"))
    refused(worker, lambda c: repo.drop_hnsw_index(c, model_id=model_id))


def test_worker_records_declared_labels_and_reviews(db: RoleDb) -> None:
    """0009: the worker's shop-floor statements run under its grants and the policies."""
    with db.admin.begin() as conn:
        model_id = register(conn)
    worker = db.login("t_worker", "vitrine_worker")
    ups = [
        Upload("s3://m-1/0.png", "m-1", "sku1", "Dress"),
        Upload("s3://m-1/1.png", "m-1", "sku1"),
    ]
    ids = run(worker, lambda c: repo.upsert_pending_images(c, uploads=ups))
    run(worker, lambda c: [repo.claim_images(c, image_ids=[i]).get(i) for i in ids])
    done = [result(ids[0], model_id, [1, 0, 0, 0]), result(ids[1], model_id, [0, 1, 0, 0])]
    run(worker, lambda c: repo.save_results(c, results=done))
    review = {"merchant_id": "m-1", "sku": "sku1", "uri": "s3://r/1.jpg"}
    row = run(worker, lambda c: repo.upsert_review(c, **review, review_ref="r-1"))
    vec = np.array([0.6, 0.8, 0, 0], dtype=np.float32)
    match = run(
        worker,
        lambda c: repo.listing_match(
            c, merchant_id="m-1", sku="sku1", model_id=model_id, embedding=vec
        ),
    )
    assert match.match_score == pytest.approx(0.8)
    saved = {"model_id": model_id, "label": "Bag", "confidence": 0.9, "match": match}
    run(worker, lambda c: repo.save_review(c, review_id=row.id, **saved))
    again = run(worker, lambda c: repo.upsert_review(c, **review, review_ref=None))
    assert again == repo.ReviewRow(row.id, "done")  # a re-sent event: nothing to do
    run(worker, lambda c: repo.fail_review(c, review_id=row.id, error="late"))  # stays done
    assert run(db.admin, "SELECT declared_label FROM images ORDER BY id") == [("Dress",), (None,)]
    assert run(db.admin, "SELECT status, review_ref FROM reviews") == [("done", "r-1")]
    refused(worker, "UPDATE reviews SET merchant_id = 'm-2'")


def test_analyst_reads_everything_and_writes_nothing(db: RoleDb) -> None:
    with db.admin.begin() as conn:
        model_id = register(conn)
        first = gallery(conn, model_id, "m-1", [[1, 0, 0, 0], [0, 1, 0, 0]])[0]
        gallery(conn, model_id, "m-2", [[1, 0.1, 0, 0]])
        conn.execute(text("INSERT INTO merchant_logins VALUES ('shop_a', 'm-1')"))
    analyst = db.login("t_analyst", "vitrine_analyst")
    relations = run(
        db.admin,
        "SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace "
        "AND relkind IN ('r', 'v') AND relname NOT IN ('api_clients', 'desk_sessions') "
        "ORDER BY relname",
    )
    # + image_quality, quality_issues (0007), erasures, reviews and its 2 views (0009),
    # label_corrections (0010), duplicate_pairs, pair_decisions, delisted_images (0016)
    assert len(relations) == 9 + 2 + 1 + 3 + 1 + 3
    for (name,) in relations:  # every row of every table and view, as the owner sees them
        count = f"SELECT count(*) FROM {name}"
        assert run(analyst, count) == run(db.admin, count), name
    assert run(analyst, "SELECT count(*) FROM images") == [(3,)]
    with pytest.raises(sqlalchemy.exc.ProgrammingError, match="permission denied"):
        run(analyst, "SELECT count(*) FROM api_clients")
    assert len(run(analyst, f"SELECT * FROM similar_images({first}, 5)")) == 2
    assert len(run(analyst, "SELECT * FROM similar_to_vector('[1,0,0,0]', 5)")) == 3
    assert run(analyst, "SELECT vitrine_merchant_scope()") == [([],)]
    assert len(run(analyst, lambda c: repo.list_models(c))) == 1
    assert run(analyst, lambda c: repo.status_counts(c))["done"] == 3
    assert run(analyst, schema_revision) == head_revision()

    for statement in (
        "INSERT INTO images (merchant_id, uri) VALUES ('m-1', 'new')",
        "UPDATE images SET sku = 'x'",
        "DELETE FROM images",
        "TRUNCATE predictions",
        "INSERT INTO merchant_logins VALUES ('me', 'm-2')",
        "UPDATE models SET is_active = true",
        "CREATE TABLE scratch (x int)",
        "CREATE VIEW scratch AS SELECT 1",
        "DROP VIEW image_labels",
        "SELECT nextval('images_id_seq')",
    ):
        refused(analyst, statement)
    refused(analyst, lambda c: repo.upsert_pending_images(c, uploads=[Upload("u", "m-1")]))
    refused(analyst, lambda c: repo.mark_failed(c, image_id=first, error="x"))


def test_analyst_default_privileges_cover_later_objects(db: RoleDb) -> None:
    """What a later migration run by the same owner creates, analysts can read."""
    run(db.admin, ("CREATE TABLE later_table (x int)", "INSERT INTO later_table VALUES (1)"))
    run(db.admin, "CREATE FUNCTION later_fn() RETURNS int LANGUAGE sql RETURN 1")
    analyst = db.login("t_analyst", "vitrine_analyst")
    worker = db.login("t_worker", "vitrine_worker")
    merchant = db.login("t_merchant", "vitrine_merchant")
    assert run(analyst, "SELECT x, later_fn() FROM later_table") == [(1, 1)]
    refused(worker, "SELECT * FROM later_table")  # writers and merchants: grants per migration
    refused(merchant, "SELECT * FROM later_table", merchant="m-1")
