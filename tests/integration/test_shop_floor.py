"""Shop floor end to end: declared categories and shoppers' review photos sent by the thin
producer to the real worker, and what views `label_mismatches` and `review_mismatches`
make of them (migration 0009)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from celery.result import AsyncResult
from sqlalchemy import Engine, text

from vitrine.bench.mismatches import encode
from vitrine.pipeline.synthetic.photos import PALETTE, make_product_photo
from vitrine.pipeline.synthetic.studio import make_studio_photo

PRODUCER_SRC = Path(__file__).resolve().parents[2] / "producer" / "src"
if str(PRODUCER_SRC) not in sys.path:
    sys.path.insert(0, str(PRODUCER_SRC))

import vitrine_producer  # noqa: E402

pytestmark = pytest.mark.integration
MERCHANT = "m-shop-floor"
TROUSER, BAG, BOOT = 7, 4, 0  # indices of the sample test set: a trouser, a bag, a boot


def _listing(fashion: Any, index: int, path: Path, seed: int) -> str:
    photo, _ = make_product_photo(fashion.x_test[index], rng=np.random.default_rng(seed))
    path.write_bytes(encode(photo))  # PNG where it is transparent
    return path.as_uri()


def _review(fashion: Any, index: int, path: Path, seed: int) -> str:
    rng = np.random.default_rng(seed)
    photo, _ = make_studio_photo(fashion.x_test[index], rng=rng, palette=PALETTE)
    photo.save(path, "JPEG", quality=80)
    return path.as_uri()


def _outcome(task_id: str) -> Any:
    from vitrine.worker.celery_app import app

    return AsyncResult(task_id, app=app).get(timeout=120)


def _rows(engine: Engine, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as conn:
        conn.execute(text("SET vitrine.review_min_match = '0.5'"))
        conn.execute(text("SET vitrine.mismatch_max_declared_score = '1'"))
        return list(conn.execute(text(sql), params))


def test_declared_labels_and_reviews_through_the_worker(
    pipeline_env: dict[str, str],
    celery_worker_process: Any,
    clean_db: Engine,
    fashion_slice: Any,
    tmp_path: Path,
) -> None:
    with clean_db.begin() as conn:
        conn.execute(text("DELETE FROM reviews"))
    uploads = [  # (sku, declared label, photo)
        ("TR-1", "trouser", _listing(fashion_slice, TROUSER, tmp_path / "trouser.jpg", 1)),
        ("BAG-1", "Trouser", _listing(fashion_slice, BAG, tmp_path / "bag.jpg", 2)),
        ("BOOT-1", "Shoes", _listing(fashion_slice, BOOT, tmp_path / "boot.jpg", 3)),
    ]
    with vitrine_producer.Producer(pipeline_env["REDIS_URL"]) as producer:
        tasks = [
            producer.submit_upload(uri, merchant_id=MERCHANT, sku=sku, declared_label=label)
            for sku, label, uri in uploads
        ]
        for task_id in tasks:
            assert len(_outcome(task_id)["done"]) == 1
        same = _review(fashion_slice, TROUSER, tmp_path / "review-same.jpg", 4)
        other = _review(fashion_slice, BAG, tmp_path / "review-bag.jpg", 5)
        reviews = [
            producer.submit_review(same, merchant_id=MERCHANT, sku="TR-1", review_ref="r-1"),
            producer.submit_review(other, merchant_id=MERCHANT, sku="TR-1", review_ref="r-2"),
            producer.submit_review(same, merchant_id=MERCHANT, sku="NO-LISTING"),
        ]
        results = [_outcome(task_id) for task_id in reviews]
        again = _outcome(producer.submit_review(same, merchant_id=MERCHANT, sku="TR-1"))

    stored = _rows(
        clean_db,
        "SELECT i.sku, i.declared_label, p.label FROM images i "
        "JOIN predictions p ON p.image_id = i.id WHERE i.merchant_id = :m ORDER BY i.sku",
        m=MERCHANT,
    )
    assert [tuple(r) for r in stored] == [
        ("BAG-1", "Trouser", "Bag"),
        ("BOOT-1", "Shoes", "Ankle boot"),
        ("TR-1", "trouser", "Trouser"),
    ]
    # declared "Trouser" on a bag is listed; "trouser" matches case-insensitively;
    # "Shoes" is none of the model's labels: kept, never judged
    listed = _rows(clean_db, "SELECT sku, predicted_label FROM label_mismatches")
    assert [tuple(r) for r in listed] == [("BAG-1", "Bag")]
    # the worker stored what the model thinks of each declared category
    scores = dict(
        _rows(
            clean_db,
            "SELECT i.sku, p.declared_score FROM images i JOIN predictions p ON p.image_id = i.id",
        )
    )
    assert scores["BOOT-1"] is None  # not one of the model's labels
    assert scores["TR-1"] > 0.5 and scores["BAG-1"] < 1e-4  # the view's default threshold

    assert [r["status"] for r in results] == ["done", "done", "done"], results
    assert results[0]["label"] == "Trouser" and results[0]["listing_label"] == "Trouser"
    assert results[0]["match_score"] > 0.5 > results[1]["match_score"]
    assert results[1]["label"] == "Bag"
    assert results[2]["match_score"] is None and results[2]["listing_label"] is None
    assert again == {"review_id": results[0]["review_id"], "status": "done", "skipped": True}
    flagged = _rows(
        clean_db,
        "SELECT review_id, review_ref, reasons, listing_label, image_id FROM review_mismatches",
    )
    (listing,) = _rows(clean_db, "SELECT id FROM images WHERE sku = 'TR-1'")
    assert [tuple(r) for r in flagged] == [  # image_id: the listing's image, for the desk
        (results[1]["review_id"], "r-2", ["low_match", "other_class"], "Trouser", listing.id)
    ]
    # review photos are not catalog images: nothing of theirs is in `images`
    assert _rows(clean_db, "SELECT count(*) FROM images WHERE merchant_id = :m", m=MERCHANT) == [
        (3,)
    ]
    with clean_db.connect() as conn:  # read at query time: every score is under 2, but a
        conn.execute(text("SET vitrine.review_min_match = '2'"))  # review with no listing
        assert conn.execute(text("SELECT count(*) FROM review_mismatches")).scalar() == 2


def test_review_photos_through_the_api(
    pipeline_env: dict[str, str],
    celery_worker_process: Any,
    clean_db: Engine,
    ctx: Any,
    fashion_slice: Any,
    tmp_path: Path,
) -> None:
    """POST /v1/reviews, by reference and as bytes, in process (the worker is real)."""
    from fastapi.testclient import TestClient

    from vitrine.api.app import create_app
    from vitrine.ops.api_clients import create_token

    with clean_db.begin() as conn:
        conn.execute(text("DELETE FROM reviews"))
    token = create_token(ctx, name=f"reviews-{tmp_path.name}", merchant_id=None).token
    auth = {"Authorization": f"Bearer {token}"}
    same = _review(fashion_slice, TROUSER, tmp_path / "same.jpg", 6)
    with TestClient(create_app(ctx)) as client:
        by_uri = client.post(
            "/v1/reviews",
            json={"uri": same, "merchant_id": MERCHANT, "sku": "TR-9", "review_ref": "r-9"},
            headers=auth,
        )
        as_file = client.post(
            "/v1/reviews",
            files={"file": ("photo.jpg", (tmp_path / "same.jpg").read_bytes(), "image/jpeg")},
            data={"merchant_id": MERCHANT, "sku": "TR-9"},
            headers=auth,
        )
        no_sku = client.post(
            "/v1/reviews",
            files={"file": ("photo.jpg", b"x", "image/jpeg")},
            data={"merchant_id": MERCHANT},
            headers=auth,
        )
        elsewhere = client.post(
            "/v1/reviews",
            json={"uri": "ftp://x/1.jpg", "merchant_id": MERCHANT, "sku": "TR-9"},
            headers=auth,
        )
    assert by_uri.status_code == as_file.status_code == 202, (by_uri.text, as_file.text)
    assert no_sku.status_code == 422 and elsewhere.status_code in (400, 422)
    outcomes = [_outcome(r.json()["task_id"]) for r in (by_uri, as_file)]
    assert [o["status"] for o in outcomes] == ["done", "done"], outcomes
    assert outcomes[0]["label"] == outcomes[1]["label"] == "Trouser"
    # the two tasks may run in either order: rows by review_ref, not by id
    stored = _rows(clean_db, "SELECT review_ref, uri FROM reviews ORDER BY review_ref")
    assert [r.review_ref for r in stored] == ["r-9", None]
    assert stored[1].uri.startswith("file://") and stored[1].uri != same  # stored bytes
