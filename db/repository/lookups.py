"""Read-only questions about images: where they stand, what the active model says.

These exist so that the CLI never has to run SQL of its own. Every id filter binds one
array parameter (see `_shared.id_in`), so a whole ingest can be looked up at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sqlalchemy import ARRAY, Connection, Text, and_, any_, func, literal, select
from sqlalchemy.dialects.postgresql import distinct_on

from vitrine.db.repository._shared import active_model_id, effective_label, id_in, label_source
from vitrine.db.repository.quality import MEASURES, quality_of
from vitrine.db.schema import IMAGE_STATUSES, embeddings, image_quality, images, predictions
from vitrine.db.types import ImageSummary, LabelInfo
from vitrine.pipeline.types import ImageInfo, Prediction


def statuses(conn: Connection, *, image_ids: Sequence[int]) -> dict[int, tuple[str, str | None]]:
    """`{image_id: (status, error)}` for the ids that exist."""
    if not image_ids:
        return {}
    stmt = select(images.c.id, images.c.status, images.c.error).where(id_in(images.c.id, image_ids))
    return {int(row.id): (row.status, row.error) for row in conn.execute(stmt)}


def status_counts(conn: Connection) -> dict[str, int]:
    """Number of images per status; every status is present, zero if none."""
    counts = dict.fromkeys(IMAGE_STATUSES, 0)
    stmt = select(images.c.status, func.count()).group_by(images.c.status)
    for status, n in conn.execute(stmt):
        counts[status] = int(n)
    return counts


def label_counts(
    conn: Connection, *, model_id: int | None = None, image_ids: Sequence[int] | None = None
) -> list[tuple[str, int]]:
    """`(label, count)` under `model_id` (default: the active model), most frequent first.

    `image_ids` restricts the count to those images (e.g. one ingest). Empty when
    `model_id` is None and no model is active.
    """
    if image_ids is not None and not image_ids:
        return []
    model = active_model_id() if model_id is None else model_id
    p = predictions
    label = effective_label(images, p).label("label")
    n = func.count().label("n")
    stmt = (
        select(label, n)
        .select_from(p.join(images, images.c.id == p.c.image_id))
        .where(p.c.model_id == model)
        .group_by(label)
        .order_by(n.desc(), label)
    )
    if image_ids is not None:
        stmt = stmt.where(id_in(p.c.image_id, image_ids))
    return [(str(label), int(count)) for label, count in conn.execute(stmt)]


def labels_for(conn: Connection, *, image_ids: Sequence[int]) -> dict[int, LabelInfo]:
    """`{image_id: LabelInfo}` under the active model, the label the effective one (a
    person's decision wins; `vitrine.db.repository._shared.effective_label`).

    Ids without a prediction from the active model (pending, failed, unknown, or no
    model active) are absent rather than mapped to None, so `len()` counts labelled ones.
    """
    if not image_ids:
        return {}
    p = predictions
    stmt = (
        select(p.c.image_id, effective_label(images, p).label("label"), p.c.confidence)
        .select_from(p.join(images, images.c.id == p.c.image_id))
        .where(p.c.model_id == active_model_id(), id_in(p.c.image_id, image_ids))
    )
    return {
        int(row.image_id): LabelInfo(label=row.label, confidence=float(row.confidence))
        for row in conn.execute(stmt)
    }


def image_summaries(conn: Connection, *, image_ids: Sequence[int]) -> dict[int, ImageSummary]:
    """`{image_id: ImageSummary}` for the ids that exist, label from the active model.

    One query for what `statuses` and `labels_for` answer separately, for reports that
    show both; unknown ids are absent.
    """
    if not image_ids:
        return {}
    p = predictions
    joined = images.outerjoin(
        p, and_(p.c.image_id == images.c.id, p.c.model_id == active_model_id())
    )
    stmt = (
        select(
            images.c.id,
            images.c.uri,
            images.c.merchant_id,
            images.c.sku,
            images.c.status,
            images.c.error,
            effective_label(images, p).label("label"),
            label_source(images, p).label("label_source"),
            p.c.confidence,
        )
        .select_from(joined)
        .where(id_in(images.c.id, image_ids))
    )
    return {
        int(row.id): ImageSummary(
            image_id=int(row.id),
            uri=row.uri,
            merchant_id=row.merchant_id,
            sku=row.sku,
            status=row.status,
            error=row.error,
            label=row.label,
            label_source=row.label_source,
            confidence=None if row.confidence is None else float(row.confidence),
        )
        for row in conn.execute(stmt)
    }


def known_results(
    conn: Connection, *, sha256s: Sequence[str], model_id: int
) -> dict[str, tuple[ImageInfo, Prediction]]:
    """What `model_id` already said about files with these sha256s: `{sha256: (info,
    prediction)}` from one `done` image each (the oldest), for those that have one.

    The same bytes give the same pixels, so a re-upload (another merchant listing the
    same photo, a platform re-sending an event) needs no decode and no forward pass; the
    info carries the file's quality measurements too, so the copy stores them as well.
    """
    if not sha256s:
        return {}
    stmt = (
        select(
            images.c.sha256,
            images.c.width,
            images.c.height,
            images.c.format,
            images.c.phash,
            predictions.c.label,
            predictions.c.label_index,
            predictions.c.confidence,
            predictions.c.top_k,
            predictions.c.unknown_score,
            predictions.c.unknown,
            embeddings.c.embedding,
            *(image_quality.c[m] for m in MEASURES),
        )
        .join(
            predictions,
            and_(predictions.c.image_id == images.c.id, predictions.c.model_id == model_id),
        )
        .join(
            embeddings,
            and_(embeddings.c.image_id == images.c.id, embeddings.c.model_id == model_id),
        )
        .outerjoin(image_quality, image_quality.c.image_id == images.c.id)
        .where(images.c.sha256 == any_(literal(sorted(set(sha256s)), ARRAY(Text))))
        .where(images.c.status == "done")
        .order_by(images.c.sha256, images.c.id)
        .ext(distinct_on(images.c.sha256))
    )
    known: dict[str, tuple[ImageInfo, Prediction]] = {}
    for row in conn.execute(stmt):
        info = ImageInfo(
            sha256=row.sha256,
            width=int(row.width),
            height=int(row.height),
            format=row.format,
            phash=bit_text(row.phash),
            quality=quality_of(row),
        )
        top_k = tuple((str(t["label"]), float(t["score"])) for t in row.top_k)
        vector = row.embedding.to_numpy() if hasattr(row.embedding, "to_numpy") else row.embedding
        known[row.sha256] = (
            info,
            Prediction(
                label=row.label,
                label_index=int(row.label_index),
                confidence=float(row.confidence),
                top_k=top_k,
                embedding=np.asarray(vector, dtype=np.float32),
                unknown_score=row.unknown_score,
                unknown=row.unknown,
            ),
        )
    return known


def bit_text(value: object) -> str | None:
    """A `bit` column's value as '0'/'1' text, whichever form the driver hands back."""
    if value is None:
        return None
    to_text = getattr(value, "to_text", None)
    return str(to_text()) if callable(to_text) else str(value)
