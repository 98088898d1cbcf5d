"""How many uploads per second one PostgreSQL takes through vitrine's own write path.

Synthetic results (a 128-d float32 embedding, top-3 scores) go through exactly what a
worker does per batch: register, claim, save (multi-row upserts, one transaction each).
Several writers at once, as a fleet of workers would be. The figure says where the next
bottleneck is once decoding is spread over more hosts.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
from sqlalchemy import Engine

from vitrine.db import repository
from vitrine.db.types import ImageResult
from vitrine.pipeline.types import ImageInfo, Prediction, Upload


def _results(
    ids: list[int], model_id: int, labels: tuple[str, ...], dim: int, seed: int
) -> list[ImageResult]:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(len(ids), dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [
        ImageResult(
            image_id=i,
            model_id=model_id,
            info=ImageInfo(sha256=f"{i:064x}", width=800, height=600, format="JPEG"),
            prediction=Prediction(
                label=labels[0],
                label_index=0,
                confidence=0.9,
                top_k=((labels[0], 0.9), (labels[1], 0.05), (labels[2], 0.03)),
                embedding=vec,
            ),
        )
        for i, vec in zip(ids, vectors, strict=True)
    ]


def database_write_rate(
    engine: Engine, *, merchant: str, images: int, batch: int, writers: int
) -> dict[str, Any]:
    """Uploads/s committed by `writers` threads, each writing batches of `batch`."""
    with engine.connect() as conn:
        model = repository.active_model(conn)
    assert model is not None, "no active model"
    per_writer = images // writers
    errors: list[BaseException] = []

    def write(w: int) -> None:
        try:
            for start in range(0, per_writer, batch):
                n = min(batch, per_writer - start)
                uploads = [Upload(f"db-bench://{w}/{start + k}", merchant) for k in range(n)]
                with engine.begin() as conn:
                    ids = repository.upsert_pending_images(conn, uploads=uploads)
                with engine.begin() as conn:
                    repository.claim_images(conn, image_ids=ids)
                with engine.begin() as conn:
                    results = _results(
                        ids, model.id, model.labels, model.embedding_dim, w * 7919 + start
                    )
                    repository.save_results(conn, results=results)
        except BaseException as exc:  # reported by the caller, not lost in a thread
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return {
        "db_images_per_s": round(per_writer * writers / elapsed, 1),
        "db_rows_per_s": round(
            3 * per_writer * writers / elapsed, 1
        ),  # image, prediction, embedding
        "db_writers": writers,
        "db_batch": batch,
    }
