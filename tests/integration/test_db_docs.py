"""Every ```sql block in docs/sql.md runs against a populated database."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from sqlalchemy import text

from tests.integration._pg import create_database, start_test_postgres
from vitrine.db import repository as repo
from vitrine.db.engine import make_engine
from vitrine.db.migrate import upgrade
from vitrine.db.types import ImageResult
from vitrine.pipeline.types import FASHION_MNIST_LABELS, ImageInfo, ModelSpec, Prediction, Upload

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[2] / "docs" / "sql.md"
BLOCKS = re.findall(r"```sql\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture(scope="module")
def docs_db() -> Iterator[str]:
    tmp_dir = tempfile.mkdtemp(prefix="vitrine-test-pg-")
    server, stop = start_test_postgres(tmp_dir)
    try:
        url = create_database(server)
        upgrade(url)
        _populate(url)
        yield url.replace("postgresql+psycopg://", "postgresql://", 1)
    finally:
        stop()
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _populate(url: str) -> None:
    """The world the examples assume: model id 1 (128-d) active, image 42 of 'acme'."""
    rng = np.random.default_rng(3)
    engine = make_engine(url)
    labels = FASHION_MNIST_LABELS
    try:
        with engine.begin() as conn:
            v1 = repo.register_model(
                conn, spec=ModelSpec("fashion-cnn", "1", labels, 128), path="/m/1"
            )
            v2 = repo.register_model(
                conn, spec=ModelSpec("fashion-cnn", "2", labels, 128), path="/m/2"
            )
            assert v1 == 1
            ids = repo.upsert_pending_images(
                conn,
                uploads=[
                    Upload(uri=f"s3://acme/{i}.jpg", merchant_id="acme", sku=f"sku-{i}")
                    for i in range(1, 61)
                ],
            )
            assert ids[41] == 42
            base = rng.normal(size=128)
            results = []
            hashes: dict[int, str] = {}
            for n, image_id in enumerate(ids[:55]):
                vec = base + rng.normal(scale=0.05 if n < 3 else 1.0, size=128)
                label_index = [7, 5, 9, 0, 8][n % 5]  # mostly shoes
                sha = "same-file" if n in (10, 11) else f"sha-{image_id}"
                phash = "".join(rng.choice(["0", "1"], size=320))
                hashes[image_id] = phash
                for model_id, shift in ((v1, 0), (v2, 1)):
                    label = labels[(label_index + shift * (n % 2)) % 10]
                    info = ImageInfo(sha256=sha, width=28, height=28, format="JPEG", phash=phash)
                    results.append(
                        ImageResult(
                            image_id=image_id,
                            model_id=model_id,
                            info=info,
                            prediction=Prediction(
                                label=label,
                                label_index=labels.index(label),
                                confidence=0.45 if n % 7 == 0 else 0.8,
                                top_k=((label, 0.8), (labels[3], 0.1), (labels[4], 0.05)),
                                embedding=vec.astype(np.float32),
                                # 21 and 22 are none of the model's categories
                                unknown_score=0.9 if n in (20, 21) else 0.1,
                                unknown=n in (20, 21),
                            ),
                        )
                    )
            repo.save_results(conn, results=results)
            repo.mark_failed(conn, image_id=ids[57], error="cannot identify image file")
            # Another seller lists acme's photo 42, re-saved (a few bits differ), and the
            # same file as acme's 43; a third of acme's listings are from last week.
            resold = repo.upsert_pending_images(
                conn,
                uploads=[
                    Upload(uri="s3://bravo/a.jpg", merchant_id="bravo", sku="b-1"),
                    Upload(uri="s3://bravo/b.jpg", merchant_id="bravo", sku="b-2"),
                ],
            )
            near = "".join("1" if c == "0" else "0" for c in hashes[42][:12]) + hashes[42][12:]
            repo.save_results(
                conn,
                results=[
                    ImageResult(
                        image_id=image_id,
                        model_id=v1,
                        info=ImageInfo(sha256=sha, width=28, height=28, format="JPEG", phash=ph),
                        prediction=results[0].prediction,
                    )
                    for image_id, sha, ph in (
                        (resold[0], "sha-bravo-1", near),
                        (resold[1], "sha-43", hashes[43]),
                    )
                ],
            )
            conn.execute(
                text(
                    "UPDATE images SET created_at = created_at - interval '9 days' "
                    "WHERE merchant_id = 'acme' AND id % 3 = 0"
                )
            )
            _shop_floor(conn)
            # A person relabelled acme's image 5 and approved image 6 on the review desk.
            conn.execute(
                text(
                    "INSERT INTO label_corrections (image_id, model_id, action, label,"
                    " previous_label, queue, decided_by) VALUES"
                    " (5, 1, 'relabel', 'Bag', 'Sneaker', 'grid', 'ann'),"
                    " (6, 1, 'approve', 'Sandal', 'Sandal', 'grid', 'ann')"
                )
            )
            # ... delisted image 8 as a copy of 7, and said review r-2 does not match (0016).
            conn.execute(
                text(
                    "INSERT INTO pair_decisions (kind, image_id, other_image_id, review_id,"
                    " decision, delisted_image_id, action_id, decided_by) VALUES"
                    " ('duplicate', 7, 8, NULL, 'delist_one', 8, gen_random_uuid(), 'ann'),"
                    " ('review', 5, NULL, (SELECT id FROM reviews WHERE review_ref = 'r-2'),"
                    " 'does_not_match', NULL, gen_random_uuid(), 'ann')"
                )
            )
    finally:
        engine.dispose()


def _shop_floor(conn: Any) -> None:
    """0009: categories acme declared on 1-20 (mostly Dress against shoes predicted at
    0.8 or 0.45; 'Shoes', none of the labels), and shoppers' review photos of sku-42:
    one that matches, one that does not (another class, low match), and one of a
    listing without images."""
    conn.execute(
        text(
            "UPDATE images SET declared_label = CASE WHEN id % 4 = 0 THEN 'sneaker' "
            "WHEN id % 5 = 0 THEN 'Shoes' ELSE 'Dress' END "
            "WHERE merchant_id = 'acme' AND id <= 20"
        )
    )
    conn.execute(
        text(
            "INSERT INTO reviews (merchant_id, sku, review_ref, uri, status, label, confidence,"
            " listing_label, match_score, model_id, processed_at) VALUES "
            "('acme', 'sku-42', 'r-1', 's3://reviews/1.jpg', 'done', 'Sneaker', 0.97,"
            " 'Sneaker', 0.93, 1, now()),"
            "('acme', 'sku-42', 'r-2', 's3://reviews/2.jpg', 'done', 'Bag', 0.99,"
            " 'Sneaker', 0.12, 1, now()),"
            "('acme', 'sku-99', 'r-3', 's3://reviews/3.jpg', 'done', 'Dress', 0.9,"
            " NULL, NULL, 1, now())"
        )
    )


def test_docs_have_examples() -> None:
    assert len(BLOCKS) >= 10
    assert any("similar_images(42, 10)" in b for b in BLOCKS)


@pytest.mark.parametrize("sql", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_doc_sql_runs(docs_db: str, sql: str) -> None:
    with psycopg.connect(docs_db, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql)
        rows: list[tuple[Any, ...]] = []
        while True:  # the last statement that returns rows must return some
            if cur.description is not None:
                rows = cur.fetchall()
            if not cur.nextset():
                break
        if "SELECT" in sql.upper():
            assert rows, sql
