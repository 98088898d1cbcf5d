"""`vitrine forget` against the session's real PostgreSQL: rows, files, audit, races, roles.

Photos are stored the way the API and the CLI store them (`vitrine.ops.api_uploads.queue_photo`
with publishing stubbed out, `vitrine.ops.ingest.staged`), so the files forget removes are laid
out exactly as vitrine lays them out; the command itself runs as a subprocess.
"""

from __future__ import annotations

import getpass
import json
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
from sqlalchemy import Connection, Engine, text

from tests.integration._roles import GROUPS, grants, refused, register, role_db, run
from tests.integration.conftest import vitrine
from vitrine.db import repository as repo
from vitrine.db.types import ImageResult
from vitrine.ops import api_uploads
from vitrine.ops.ingest import staged
from vitrine.ops.uploads import file_uri
from vitrine.pipeline.types import ImageInfo, ImageQuality, Prediction, Upload

pytestmark = pytest.mark.integration


@pytest.fixture
def db(clean_db: Engine) -> Engine:
    with clean_db.begin() as conn:
        conn.execute(text("TRUNCATE erasures RESTART IDENTITY"))
    return clean_db


@pytest.fixture
def outside() -> Iterator[Path]:
    """A merchant's own folder, outside the workers' file roots (so the CLI stages it)."""
    path = Path(tempfile.mkdtemp(prefix="vitrine-merchant-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _api_photo(ctx: Any, monkeypatch: pytest.MonkeyPatch, data: bytes, merchant: str) -> int:
    """`POST /v1/uploads` with a file, minus the message to the workers."""
    monkeypatch.setattr(
        api_uploads, "publish_uploads", lambda items, merchants: [SimpleNamespace(id="stub")]
    )
    return api_uploads.queue_photo(ctx, data, merchant_id=merchant, sku=None).image_id


def _register(engine: Engine, uploads: list[Upload]) -> list[int]:
    with engine.begin() as conn:
        return repo.upsert_pending_images(conn, uploads=uploads)


# Stored in image_quality (0007) with the results: one more image-keyed table to erase.
QUALITY = ImageQuality(28, 0.9, 0.5, 0.8, False, 50.0, 240.0, 100.0)


def _result(conn: Connection, image_id: int) -> ImageResult:
    model = repo.active_model(conn)
    assert model is not None
    vec = np.zeros(model.embedding_dim, dtype=np.float32)
    vec[image_id % model.embedding_dim] = 1.0
    return ImageResult(
        image_id=image_id,
        model_id=model.id,
        info=ImageInfo(
            sha256=f"sha-{image_id}", width=28, height=28, format="PNG", quality=QUALITY
        ),
        prediction=Prediction(
            label="Shirt", label_index=6, confidence=0.9, top_k=(("Shirt", 0.9),), embedding=vec
        ),
    )


def _process(engine: Engine, ids: list[int]) -> None:
    """What a worker stores for these images (claim, then save)."""
    with engine.begin() as conn:
        claimed = repo.claim_images(conn, image_ids=ids)
        assert repo.save_results(conn, results=[_result(conn, i) for i in claimed]) == sorted(ids)


def _left(engine: Engine, ids: list[int]) -> dict[str, int]:
    """Rows of these images in `images` and in every table with an image_id column (found
    here independently of `repository.image_rows_left`, which forget itself uses)."""
    tables = run(
        engine,
        "SELECT DISTINCT c.relname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid "
        "WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r' "
        "AND a.attname = 'image_id'",
    )
    assert {"predictions", "embeddings"} <= {t for (t,) in tables}
    column = {t: "image_id" for (t,) in tables} | {"images": "id"}
    left = {}
    with engine.connect() as conn:
        for table, key in column.items():
            n = conn.execute(
                text(f'SELECT count(*) FROM "{table}" WHERE {key} = ANY(:ids)'), {"ids": ids}
            ).scalar_one()
            if n:
                left[table] = int(n)
    return left


def _forget(env: dict[str, str], *args: str) -> dict[str, Any]:
    proc = vitrine(env, "forget", *args, "--json", timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return dict(json.loads(proc.stdout))


def test_forget_a_merchant_rows_files_and_audit(
    pipeline_env: dict[str, str],
    ctx: Any,
    db: Engine,
    outside: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The API keeps each merchant's photos apart: the same bytes at two shops are two files.
    api_a = _api_photo(ctx, monkeypatch, b"same photo at two shops", "m-a")
    api_b = _api_photo(ctx, monkeypatch, b"same photo at two shops", "m-b")
    alone_id = _api_photo(ctx, monkeypatch, b"only at shop a", "m-a")
    local = outside / "shirt.jpg"
    local.write_bytes(b"the merchant's original")
    # The operator's CLI staged one local file for both shops: one file, named by two rows.
    staged_upload, staged_for_b = staged(ctx, [Upload(file_uri(local), m) for m in ("m-a", "m-b")])
    assert staged_upload.uri == staged_for_b.uri
    (other_shop,) = _register(db, [staged_for_b])
    in_roots = tmp_path / "catalog" / "dress.png"  # under the workers' roots: read in place
    in_roots.parent.mkdir()
    in_roots.write_bytes(b"the merchant's own file")
    ids = _register(
        db,
        [
            staged_upload,
            Upload(file_uri(in_roots), "m-a"),
            Upload("https://cdn.example.com/a.jpg", "m-a"),
        ],
    )
    mine = [api_a, alone_id, *ids]
    _process(db, [*mine, other_shop, api_b])
    with db.connect() as conn:
        uris = {int(i): str(u) for i, u in conn.execute(text("SELECT id, uri FROM images"))}
    files = {
        name: Path(unquote(urlsplit(uris[i]).path))
        for name, i in (("api", api_a), ("alone", alone_id), ("shared", ids[0]), ("b", api_b))
    }
    assert files["api"] != files["b"]
    assert files["shared"].is_relative_to(ctx.settings.uploads / "staged")
    assert all(p.is_file() for p in files.values())

    rehearsal = _forget(pipeline_env, "--merchant", "m-a", "--dry-run")
    assert rehearsal | {"db_user": None} == {
        "scope": "merchant",
        "subject": "m-a",
        "dry_run": True,
        "images_deleted": 5,
        "files_deleted": 2,
        "files_shared": 1,
        "uris_not_ours": 2,
        "erasure_id": None,
        "db_user": None,
        "reviews_deleted": 0,
    }
    left = _left(db, mine)
    assert left == dict.fromkeys(("images", "predictions", "embeddings", "image_quality"), 5)
    assert all(p.is_file() for p in files.values())
    assert run(db, "SELECT count(*) FROM erasures") == [(0,)]

    done = _forget(pipeline_env, "--merchant", "m-a")
    assert (done["images_deleted"], done["files_deleted"], done["files_shared"]) == (5, 2, 1)
    assert _left(db, mine) == {}
    assert not files["alone"].exists() and not files["api"].exists()
    assert files["b"].read_bytes() == b"same photo at two shops"  # m-b's own copy
    assert files["shared"].read_bytes() == b"the merchant's original"  # m-b's row names it
    assert local.read_bytes() == b"the merchant's original"  # staged was a link or copy
    assert in_roots.read_bytes() == b"the merchant's own file"  # never vitrine's to delete
    assert run(db, f"SELECT status FROM images WHERE id = {other_shop}") == [("done",)]

    (audit,) = run(
        db,
        "SELECT id, scope, subject, db_user, os_user, images_deleted, "
        "files_deleted, erased_at <= now() FROM erasures",
    )
    session_user = run(db, "SELECT session_user")[0][0]
    assert audit == (
        done["erasure_id"],
        "merchant",
        "m-a",
        session_user,
        getpass.getuser(),
        5,
        2,
        True,
    )
    assert done["db_user"] == session_user

    # The last image naming the shared file goes: now the file goes with it.
    proc = vitrine(pipeline_env, "forget", "--image", str(other_shop), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith(f"forgot image {other_shop}: deleted 1 image(s)")
    assert not files["shared"].exists()
    assert run(
        db, "SELECT scope, subject, images_deleted, files_deleted FROM erasures ORDER BY id"
    ) == [("merchant", "m-a", 5, 2), ("image", str(other_shop), 1, 1)]


def test_forget_one_image_and_user_mistakes(pipeline_env: dict[str, str], db: Engine) -> None:
    keep, drop = _register(db, [Upload("s3://b/1.png", "m-c"), Upload("s3://b/2.png", "m-c")])
    _process(db, [keep, drop])
    done = _forget(pipeline_env, "--image", str(drop))
    assert (done["scope"], done["subject"], done["images_deleted"]) == ("image", str(drop), 1)
    assert _left(db, [drop]) == {} and _left(db, [keep])["predictions"] == 1

    for args, message in (
        (["--image", str(drop)], f"no image {drop}"),  # gone now: unknown
        (["--image", "999999"], "no image 999999"),
        (["--merchant", "nobody"], "'nobody' has no images"),
        (["--merchant", "m-c", "--image", str(keep)], "exactly one"),
        ([], "exactly one"),
    ):
        proc = vitrine(pipeline_env, "forget", *args, timeout=120)
        assert proc.returncode == 2, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr, proc.stderr
        assert proc.stdout == ""
    assert _left(db, [keep])["images"] == 1
    assert run(db, "SELECT count(*) FROM erasures") == [(1,)]


def test_an_erased_image_does_not_come_back(db: Engine) -> None:
    """A worker claimed it, the erasure ran, then the worker saves its batch."""
    gone, kept = _register(db, [Upload("s3://r/1.png", "m-r"), Upload("s3://r/2.png", "m-r")])
    with db.begin() as conn:
        assert set(repo.claim_images(conn, image_ids=[gone, kept])) == {gone, kept}
        results = [_result(conn, gone), _result(conn, kept)]
    with db.begin() as conn:
        assert repo.delete_images(conn, scope="image", subject=str(gone)) == [
            (gone, "s3://r/1.png")
        ]
    with db.begin() as conn:
        assert repo.save_results(conn, results=results) == [kept]  # no error for the batch
        repo.mark_failed(conn, image_id=gone, error="late")
    assert _left(db, [gone]) == {}
    assert run(db, f"SELECT status FROM images WHERE id = {kept}") == [("done",)]


def test_an_erasure_waits_for_a_save_in_flight(db: Engine) -> None:
    """The other order: the worker's transaction is open when the erasure starts."""
    (image_id,) = _register(db, [Upload("s3://r/3.png", "m-r")])
    erased: list[list[tuple[int, str]]] = []
    with db.connect() as worker:
        repo.claim_images(worker, image_ids=[image_id]).get(image_id)
        repo.save_results(worker, results=[_result(worker, image_id)])

        def erase() -> None:
            with db.begin() as conn:
                erased.append(repo.delete_images(conn, scope="image", subject=str(image_id)))

        thread = threading.Thread(target=erase)
        thread.start()
        thread.join(1.0)
        assert thread.is_alive()  # blocked by the worker's lock, not racing past it
        worker.commit()
    thread.join(30)
    assert erased == [[(image_id, "s3://r/3.png")]]
    assert _left(db, [image_id]) == {}


def test_audit_trail_is_the_owners_and_the_analysts(ctx: Any) -> None:
    """Owner writes, analyst reads; workers and merchants neither; the worker's save path
    (with its new lock) still works under its own role."""
    with role_db(ctx.database_url()) as rdb:
        with rdb.admin.begin() as conn:
            repo.record_erasure(
                conn,
                scope="merchant",
                subject="m-1",
                os_user=None,
                images_deleted=3,
                files_deleted=1,
            )
            register(conn)
        analyst = rdb.login("t_forget_analyst", "vitrine_analyst")
        worker = rdb.login("t_forget_worker", "vitrine_worker")
        merchant = rdb.login("t_forget_merchant", "vitrine_merchant")
        (image_id,) = run(
            worker, lambda c: repo.upsert_pending_images(c, uploads=[Upload("s3://w/1.png", "m-1")])
        )
        assert run(analyst, "SELECT scope, subject, db_user FROM erasures") == [
            ("merchant", "m-1", run(rdb.admin, "SELECT session_user")[0][0])
        ]
        refused(
            analyst,
            "INSERT INTO erasures (scope, subject, images_deleted, files_deleted) "
            "VALUES ('image', '1', 0, 0)",
        )
        refused(analyst, "DELETE FROM erasures")
        ours = {r: {g for g in grants(rdb, r) if g.startswith("erasures")} for r in GROUPS}
        assert ours == {
            "vitrine_worker": set(),
            "vitrine_analyst": {"erasures:SELECT"},
            "vitrine_merchant": set(),
        }
        refused(worker, "SELECT * FROM erasures")
        refused(merchant, "SELECT * FROM erasures", merchant="m-1")
        refused(worker, lambda c: repo.delete_images(c, scope="merchant", subject="m-1"))
        refused(merchant, lambda c: repo.delete_images(c, scope="merchant", subject="m-1"), "m-1")
        run(worker, lambda c: repo.claim_images(c, image_ids=[image_id]).get(image_id))
        assert run(worker, lambda c: repo.save_results(c, results=[_result(c, image_id)])) == [
            image_id
        ]


def test_forgetting_a_merchant_takes_its_listings_review_photos(
    pipeline_env: dict[str, str], ctx: Any, db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shoppers' review photos of the merchant's listings go with it, files included; a
    review photo whose bytes another merchant's image shares keeps its file."""
    _api_photo(ctx, monkeypatch, b"listing photo", "m-rev")
    other = _api_photo(ctx, monkeypatch, b"shared review bytes", "m-other")
    shared_uri = run(db, f"SELECT uri FROM images WHERE id = {other}")[0][0]
    review_file = ctx.settings.uploads / "api" / "ab" / ("ab" + "0" * 62)  # the API's layout
    review_file.parent.mkdir(parents=True, exist_ok=True)
    review_file.write_bytes(b"a shopper's photo")
    with db.begin() as conn:
        for uri in (file_uri(review_file), shared_uri):
            conn.execute(
                text("INSERT INTO reviews (merchant_id, sku, uri) VALUES ('m-rev', 'S-1', :u)"),
                {"u": uri},
            )
    report = _forget(pipeline_env, "--merchant", "m-rev")
    assert report["reviews_deleted"] == 2 and report["images_deleted"] == 1
    assert not review_file.exists()  # vitrine's file, named by nothing any more
    assert Path(unquote(urlsplit(shared_uri).path)).exists()  # m-other's image needs it
    assert run(db, "SELECT count(*) FROM reviews WHERE merchant_id = 'm-rev'") == [(0,)]
