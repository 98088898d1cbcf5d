"""End to end through real parts: CLI -> Redis -> celery worker -> Pillow -> Keras -> pgvector."""

from __future__ import annotations

import base64
import io
import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import redis
from celery.result import AsyncResult
from PIL import Image
from sqlalchemy import Engine, text

from tests.integration.conftest import vitrine
from vitrine.worker.names import INGEST_TASK, UPLOADS_QUEUE

pytestmark = pytest.mark.integration


def _submit_wait(
    env: dict[str, str], *paths: Path, merchant: str, exit_code: int = 0
) -> list[dict[str, object]]:
    proc = vitrine(env, "submit", *map(str, paths), "--merchant", merchant, "--wait", "--json")
    assert proc.returncode == exit_code, proc.stderr  # 1: some uploads failed
    return json.loads(proc.stdout)["results"]


def test_uploads_become_labels_and_vectors(
    pipeline_env, celery_worker_process, clean_db: Engine, catalog
) -> None:
    directory, truth = catalog
    rows = _submit_wait(pipeline_env, directory, merchant="m-e2e")
    assert len(rows) == len(truth)
    assert {r["status"] for r in rows} == {"done"}, [r for r in rows if r["status"] != "done"]

    with clean_db.connect() as conn:
        stored = conn.execute(
            text(
                "SELECT i.uri, i.sha256, i.width, i.height, i.format, i.status, p.label, "
                "p.confidence, p.top_k, e.embedding, m.key "
                "FROM images i JOIN predictions p ON p.image_id = i.id "
                "JOIN embeddings e ON e.image_id = i.id AND e.model_id = p.model_id "
                "JOIN models m ON m.id = p.model_id WHERE i.merchant_id = 'm-e2e'"
            )
        ).all()
    assert len(stored) == len(truth)  # exactly one prediction and embedding per image
    correct = 0
    for row in stored:
        name = Path(row.uri.removeprefix("file://")).name
        correct += row.label == truth[name]
        assert len(row.sha256) == 64 and row.width >= 400 and row.height >= 400
        assert row.format in {"JPEG", "PNG", "WEBP"}
        assert 0.0 < row.confidence <= 1.0
        assert row.top_k[0]["label"] == row.label
        vector = np.asarray(row.embedding.to_numpy(), dtype=np.float32)
        assert vector.shape == (128,)
        assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-3
        assert row.key == "fashion-cnn@1"
    # The model is ~0.95 on raw test images; photos go through the full preprocessing path.
    assert correct / len(stored) >= 0.85


def test_analyst_sql_finds_same_class_neighbours(
    pipeline_env, celery_worker_process, clean_db: Engine, catalog
) -> None:
    directory, truth = catalog
    _submit_wait(pipeline_env, directory, merchant="m-sql")
    with clean_db.connect() as conn:
        ids = conn.execute(text("SELECT id, uri FROM images ORDER BY id")).all()
        label_of = {i: truth[Path(u.removeprefix("file://")).name] for i, u in ids}
        same, total = 0, 0
        for image_id, _ in ids:
            # What an analyst types in psql: the raw operator, not a helper function.
            neighbours = conn.execute(
                text(
                    "SELECT e.image_id FROM embeddings e JOIN active_model m ON m.id = e.model_id "
                    "WHERE e.image_id <> :id ORDER BY e.embedding::vector(128) <=> "
                    "(SELECT embedding::vector(128) FROM embeddings q "
                    " WHERE q.image_id = :id AND q.model_id = m.id) LIMIT 5"
                ),
                {"id": image_id},
            ).scalars()
            for n in neighbours:
                same += label_of[n] == label_of[image_id]
                total += 1
        via_function = conn.execute(
            text("SELECT image_id, distance FROM similar_images(:id, 5)"), {"id": ids[0][0]}
        ).all()
    assert total == 5 * len(ids)
    assert same / total >= 0.75
    assert len(via_function) == 5
    assert ids[0][0] not in {r.image_id for r in via_function}
    distances = [r.distance for r in via_function]
    assert distances == sorted(distances)


def _write_bad_inputs(directory: Path) -> dict[str, str]:
    """File name -> a word its error must contain."""
    directory.mkdir(parents=True, exist_ok=True)
    good = Image.new("RGB", (300, 300), "white")
    good.paste((20, 40, 160), (100, 60, 200, 240))
    buf = io.BytesIO()
    good.save(buf, "JPEG", quality=90)
    (directory / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (directory / "notes.jpg").write_text("this is not an image at all\n")
    (directory / "empty.png").write_bytes(b"")
    bomb = Image.new("1", (9000, 9000))  # 81 Mpx, over the 40 Mpx default limit
    bomb.save(directory / "bomb.png", optimize=True)
    return {
        "truncated.jpg": "truncat",
        "notes.jpg": "not an image",
        "empty.png": "empty",
        "bomb.png": "limit",
    }


def test_bad_input_fails_its_row_and_never_the_worker(
    pipeline_env, celery_worker_process, clean_db: Engine, tmp_path: Path
) -> None:
    expected = _write_bad_inputs(tmp_path / "bad")
    odd = tmp_path / "odd"
    odd.mkdir()
    Image.new("CMYK", (500, 400), (0, 200, 200, 0)).save(odd / "cmyk.jpg")
    Image.new("I;16", (400, 400), 30000).save(odd / "sixteen.png")
    Image.new("LA", (300, 500), (0, 0)).save(odd / "transparent.png")

    rows = _submit_wait(pipeline_env, tmp_path / "bad", odd, merchant="m-bad", exit_code=1)
    by_name = {Path(str(r["uri"])).name: r for r in rows}
    for name, word in expected.items():
        assert by_name[name]["status"] == "failed", by_name[name]
        assert word in (by_name[name]["error"] or "").lower(), by_name[name]
    for name in ("cmyk.jpg", "sixteen.png", "transparent.png"):
        assert by_name[name]["status"] == "done", by_name[name]
    assert celery_worker_process.poll() is None  # the worker survived all of it

    with clean_db.connect() as conn:
        attempts = dict(conn.execute(text("SELECT uri, attempts FROM images")).all())
    assert all(a == 1 for a in attempts.values()), attempts  # permanent errors are not retried


def test_resubmitting_is_idempotent(
    pipeline_env, celery_worker_process, clean_db: Engine, catalog
) -> None:
    directory, _ = catalog
    photo = sorted(directory.glob("*.*"))[0]
    first = _submit_wait(pipeline_env, photo, merchant="m-idem")
    second = _submit_wait(pipeline_env, photo, merchant="m-idem")
    assert first[0]["image_id"] == second[0]["image_id"]
    assert second[0]["status"] == "done"
    with clean_db.connect() as conn:
        counts = conn.execute(
            text(
                "SELECT (SELECT count(*) FROM images), (SELECT count(*) FROM predictions), "
                "(SELECT count(*) FROM embeddings), (SELECT attempts FROM images)"
            )
        ).one()
    assert tuple(counts) == (1, 1, 1, 1)  # second delivery found it done and did nothing


def test_producer_in_another_language_can_publish(
    pipeline_env, celery_worker_process, clean_db: Engine, catalog
) -> None:
    """The raw message of docs/producers.md, pushed with plain Redis commands."""
    directory, _ = catalog
    photo = sorted(directory.glob("*.*"))[1]
    task_id = str(uuid.uuid4())
    body = [[], {"uri": photo.as_uri(), "merchant_id": "m-raw", "sku": "RAW-1"}, {}]
    message = {
        "body": base64.b64encode(json.dumps(body).encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"lang": "py", "task": INGEST_TASK, "id": task_id, "root_id": task_id},
        "properties": {
            "correlation_id": task_id,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
            "delivery_info": {"exchange": "", "routing_key": UPLOADS_QUEUE},
        },
    }
    redis.Redis.from_url(pipeline_env["REDIS_URL"]).lpush(UPLOADS_QUEUE, json.dumps(message))

    from vitrine.worker.celery_app import app

    outcome = AsyncResult(task_id, app=app).get(timeout=120)
    assert len(outcome["done"]) == 1
    with clean_db.connect() as conn:
        row = conn.execute(
            text(
                "SELECT i.status, i.sku, p.label FROM images i JOIN predictions p "
                "ON p.image_id = i.id WHERE i.merchant_id = 'm-raw'"
            )
        ).one()
    assert row.status == "done" and row.sku == "RAW-1" and row.label


def test_studio_photos_through_a_worker_get_the_labels_eval_gives(
    pipeline_env, celery_worker_process, clean_db: Engine, fashion_slice, tmp_path: Path
) -> None:
    """Studio photos (coloured backdrop, shadow, tilt) submitted as a merchant would: the
    worker stores exactly the labels `vitrine eval --images` computes for the same files,
    so both use one preprocessing, and most of them are the true class."""
    import csv

    from vitrine.pipeline.inference.model import load_model_dir
    from vitrine.pipeline.inference.preprocess import preprocess_bytes
    from vitrine.pipeline.synthetic.photos import write_catalog
    from vitrine.settings import get_settings

    manifest = write_catalog(
        fashion_slice.x_test, fashion_slice.y_test, tmp_path, n=24, seed=2025, style="studio"
    )
    with manifest.open(newline="") as fh:
        truth = {row["file"]: row["label"] for row in csv.DictReader(fh)}
    rows = _submit_wait(pipeline_env, tmp_path, merchant="m-studio")
    assert {r["status"] for r in rows} == {"done"} and len(rows) == len(truth)

    settings = get_settings()
    model = load_model_dir(settings.model_dir)
    expected = {}
    for name in truth:
        array, _ = preprocess_bytes(
            (tmp_path / name).read_bytes(), model.spec.preprocess, limits=settings.image_limits
        )
        expected[name] = model.predict(array[None])[0].label
    with clean_db.connect() as conn:
        stored = conn.execute(
            text(
                "SELECT i.uri, p.label FROM images i JOIN predictions p ON p.image_id = i.id "
                "WHERE i.merchant_id = 'm-studio'"
            )
        ).all()
    labels = {Path(row.uri.removeprefix("file://")).name: row.label for row in stored}
    assert labels == expected
    correct = sum(labels[name] == label for name, label in truth.items())
    assert correct >= 0.75 * len(truth), (correct, len(truth))


def test_search_by_photo_finds_the_catalog_item_and_its_kind(
    pipeline_env, celery_worker_process, clean_db: Engine, catalog, tmp_path: Path
) -> None:
    """`vitrine similar --image FILE`: a photo from disk, embedded by the CLI through the
    workers' preprocessing, finds itself first in the catalog (distance ~0) and then items
    of its own class; a file that is not an image is one line and exit 2."""
    directory, truth = catalog
    _submit_wait(pipeline_env, directory, merchant="m-photo")
    with clean_db.connect() as conn:  # the worker hashed every photo it processed
        unhashed = conn.execute(
            text("SELECT count(*) FROM images WHERE merchant_id = 'm-photo' AND phash IS NULL")
        ).scalar_one()
    assert unhashed == 0
    name = sorted(truth)[0]
    sheet = tmp_path / "sheet.png"
    proc = vitrine(
        pipeline_env,
        "similar",
        "--image",
        str(directory / name),
        "-k",
        "5",
        "--png",
        str(sheet),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    first, *rest = found["neighbours"]
    assert Path(first["uri"].removeprefix("file://")).name == name
    # k places hold only close items (VITRINE_SIMILAR_MAX_DISTANCE, 0.3): in a catalogue of
    # 80 photos, 8 or so of a kind, fewer than k may be that close.
    assert first["distance"] < 1e-3 and 1 <= len(rest) <= 4
    assert all(n["distance"] <= 0.3 for n in rest)
    assert found["label"] == first["label"]
    same_kind = sum(truth[Path(n["uri"].removeprefix("file://")).name] == truth[name] for n in rest)
    assert same_kind >= len(rest) - 1
    with Image.open(sheet) as img:
        assert img.width > img.height  # one row: the photo, then its neighbours

    # Within one merchant and one label: only rows that match, nearest first, none far.
    for label in (found["label"], next(t for t in sorted(set(truth.values())) if t != truth[name])):
        proc = vitrine(
            pipeline_env,
            "similar",
            "--image",
            str(directory / name),
            "-k",
            "3",
            "--merchant",
            "m-photo",
            "--label",
            label,
            "--json",
        )
        assert proc.returncode == 0, proc.stderr
        within = json.loads(proc.stdout)
        rows = within["neighbours"]
        assert len(rows) <= 3 and all(n["distance"] <= 0.3 for n in rows)
        assert {(n["merchant_id"], n["label"]) for n in rows} <= {("m-photo", label)}
        assert [n["distance"] for n in rows] == sorted(n["distance"] for n in rows)
        assert rows or "no close match" in within["note"]
        if label == found["label"]:
            assert rows[0]["distance"] < 1e-3  # the photo itself, stored under m-photo

    proc = vitrine(pipeline_env, "similar", "--image", str(directory / name), "--label", "Hat")
    assert proc.returncode == 2 and "not one of the active model's" in proc.stderr

    bogus = tmp_path / "notes.jpg"
    bogus.write_text("not a photo")
    proc = vitrine(pipeline_env, "similar", "--image", str(bogus))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "notes.jpg: not an image" in proc.stderr
