"""What a task does with a batch of uploads: claim, fetch, preprocess, one forward pass, save.

Each image fails or succeeds on its own: a corrupt file becomes a `failed` row with its
reason while the rest of the batch is saved. Transient trouble (network) leaves the image
`processing` and is reported so the task can retry; already-`done` images are skipped,
which is what makes redelivery and re-submission harmless.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from db import repository
from pipeline.batch import failure_reason, prepare_batch
from worker import metrics, runtime
from worker.fetch import PermanentError, TransientError
from worker.fetch_many import fetch_all
from worker.settings import get_settings


@dataclass(frozen=True)
class WorkItem:
    image_id: int
    uri: str


@dataclass
class BatchOutcome:
    done: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)
    transient: dict[int, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "done": self.done,
            "failed": {str(k): v for k, v in self.failed.items()},
            "skipped": self.skipped,
            "transient": {str(k): v for k, v in self.transient.items()},
        }


def process_batch(
    items: Sequence[WorkItem], *, model_key: str | None = None, claim: bool = True
) -> BatchOutcome:
    """Run one batch through the active model (or `model_key`, for re-embedding backfills)."""
    settings = get_settings()
    engine = runtime.engine()
    target = runtime.model_by_key(model_key) if model_key else runtime.active_model()
    spec = target.model.spec
    if not model_key:
        metrics.set_model(target.row.id, target.row.name, target.row.version)
    outcome = BatchOutcome()
    timer = metrics.StageTimer()  # vitrine_stage_seconds, per batch
    merchants: dict[int, str] = {}

    if claim:
        with engine.begin() as conn:
            got = repository.claim_images(conn, image_ids=[item.image_id for item in items])
        merchants = {image_id: row.merchant_id for image_id, row in got.items()}
        claimed = []
        for item in items:
            claim_row = got.get(item.image_id)
            if claim_row is None:
                outcome.skipped.append(item.image_id)
            elif claim_row.attempts > settings.max_attempts:  # poison: killed its worker each time
                outcome.failed[item.image_id] = _gave_up(
                    claim_row.attempts - 1, claim_row.last_error
                )
            else:
                claimed.append(item)
    else:
        claimed = list(items)

    # All sources at once: a slow URL costs its own image, never the batch (fetch_many).
    with timer.stage("fetch", record=bool(claimed)):
        fetched = fetch_all(
            [item.uri for item in claimed],
            settings.source_policy,
            max_workers=settings.fetch_concurrency,
            per_host=settings.fetch_per_host,
            deadline_s=settings.fetch_timeout_s,
            batch_deadline_s=settings.fetch_batch_deadline_s,
        )

    def read(item: WorkItem) -> bytes:
        got = fetched[item.uri]
        if isinstance(got, Exception):
            raise got
        return got

    # Bytes this model has seen already (a re-upload, the same photo from another shop):
    # reuse what it said, with no decode and no forward pass.
    digests = {
        item: hashlib.sha256(data).hexdigest()
        for item in claimed
        if isinstance(data := fetched[item.uri], bytes)
    }
    known = {}
    if settings.reuse_known_bytes:
        with engine.connect() as conn:
            known = repository.known_results(
                conn, sha256s=list(digests.values()), model_id=target.row.id
            )
    reused = [
        repository.ImageResult(
            image_id=item.image_id,
            model_id=target.row.id,
            info=known[sha][0],
            prediction=known[sha][1],
        )  # fmt: skip
        for item, sha in digests.items()
        if sha in known
    ]
    fresh = [item for item in claimed if digests.get(item) not in known]

    # prepare_batch catches everything per item: an odd file fails its row, never the worker.
    with timer.stage("decode", record=bool(fresh)):
        batch = prepare_batch(
            fresh,
            read,
            spec.preprocess,
            settings.image_limits,
            digests,
            with_phash=True,
            with_quality=True,
        )
    for item, exc in batch.failures.items():
        if isinstance(exc, PermanentError):
            outcome.failed[item.image_id] = str(exc)
        elif isinstance(exc, TransientError):
            outcome.transient[item.image_id] = str(exc)
        else:
            outcome.failed[item.image_id] = failure_reason(exc)

    with timer.stage("forward", record=bool(batch.keys)):
        predictions = target.model.predict(batch.arrays) if batch.keys else []
    if batch.keys:
        metrics.BATCH_SIZE.observe(len(batch.keys))
    results = reused + [
        repository.ImageResult(
            image_id=item.image_id,
            model_id=target.row.id,
            info=info,
            prediction=prediction,
        )
        for item, info, prediction in zip(batch.keys, batch.infos, predictions, strict=True)
    ]
    with timer.stage("write", record=bool(results or outcome.failed)), engine.begin() as conn:
        if results:
            repository.save_results(conn, results=results)
        for image_id, error in outcome.failed.items():
            repository.mark_failed(conn, image_id=image_id, error=error)
    outcome.done = [r.image_id for r in results]
    # Uploads that ended here (a backfill re-embeds done images: nothing ends for them).
    metrics.report_outcomes(
        done=outcome.done if claim else [],
        failed=outcome.failed,
        merchants=merchants,
        timings=timer.ms(),
    )
    return outcome


def _gave_up(attempts: int, last_error: str | None) -> str:
    why = last_error or "each attempt ended without a result (worker stopped or timed out)"
    return f"gave up after {attempts} attempts: {why}"


def fail_images(image_ids: Sequence[int], error: str) -> None:
    """Give up on images after the last retry, so none is left `processing` for ever."""
    with runtime.engine().begin() as conn:
        for image_id in image_ids:
            repository.mark_failed(conn, image_id=image_id, error=error)
    metrics.report_outcomes(failed=dict.fromkeys(image_ids, error))


__all__ = ["BatchOutcome", "PermanentError", "TransientError", "WorkItem", "fail_images"]
