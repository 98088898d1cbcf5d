"""The upload worker a newcomer writes, kept as the baseline `vitrine bench ingest` beats.

One task per image; `model.predict` on that one image (Keras' high-level call, which
builds a data pipeline for every call); one INSERT per row and a commit per image. Same
preprocessing and the same tables as the real path, so the gap is the architecture alone.
Loaded into a benchmark's worker only (`celery worker --include vitrine.bench.naive`).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, insert
from sqlalchemy.orm import Session

from vitrine.db.engine import make_engine
from vitrine.db.schema import embeddings, images, predictions
from vitrine.pipeline.inference.model import LoadedModel, load_model_dir
from vitrine.pipeline.inference.preprocess import preprocess_bytes
from vitrine.settings import get_settings
from vitrine.worker.celery_app import app

NAIVE_TASK = "vitrine.bench.naive"
NAIVE_QUEUE = "bench-naive"


@functools.cache
def _engine() -> Engine:
    return make_engine(str(get_settings().database_url))


@functools.cache
def _model() -> tuple[LoadedModel, int]:
    settings = get_settings()
    loaded = load_model_dir(settings.model_dir)
    with _engine().connect() as conn:
        from vitrine.db import repository

        row = repository.active_model(conn)
    assert row is not None
    return loaded, row.id


@app.task(name=NAIVE_TASK)
def naive_ingest(path: str, merchant_id: str) -> int:
    loaded, model_id = _model()
    settings = get_settings()
    array, info = preprocess_bytes(
        Path(path).read_bytes(),
        loaded.spec.preprocess,
        limits=settings.image_limits,
        with_phash=True,
    )
    out: Any = loaded.keras_model.predict(array[None], verbose=0)
    probs, embedding = out["probabilities"][0], out["embedding"][0]
    best = int(probs.argmax())
    label = loaded.spec.labels[best]
    with Session(_engine()) as session:
        image_id = session.execute(
            insert(images)
            .values(
                merchant_id=merchant_id,
                uri=Path(path).as_uri(),
                status="done",
                sha256=info.sha256,
                width=info.width,
                height=info.height,
                format=info.format,
                phash=info.phash,
                attempts=1,
                processed_at=func.now(),
            )
            .returning(images.c.id)
        ).scalar_one()
        session.execute(
            insert(predictions).values(
                image_id=image_id,
                model_id=model_id,
                label=label,
                label_index=best,
                confidence=float(probs[best]),
                top_k=[{"label": label, "score": float(probs[best])}],
            )
        )
        session.execute(
            insert(embeddings).values(image_id=image_id, model_id=model_id, embedding=embedding)
        )
        session.commit()
    return int(image_id)
