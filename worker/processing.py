"""What a task does with a batch of uploads: claim, fetch, preprocess, one forward pass, save.

Each image fails or succeeds on its own (`vitrine.worker.failures.classify` sorts them): a
corrupt file becomes a `failed` row with its reason while the rest of the batch is saved.
Transient trouble (network) leaves the image `processing` and is reported so the task can
retry; already-`done` images are skipped, which is what makes redelivery and
re-submission harmless.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from vitrine.db import repository
from vitrine.pipeline.inference.batch import failure_reason, prepare_batch
from vitrine.pipeline.types import GAVE_UP_PREFIX
from vitrine.settings import Settings, get_settings
from vitrine.sources.fetch import PermanentError, TransientError
from vitrine.sources.fetch_many import fetch_all
from vitrine.worker import metrics, runtime
from vitrine.worker.failures import classify

log = logging.getLogger(__name__)


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


#: How long a batch's near-duplicate probe may take before its pairs are left for later
#: (`record_duplicates`): a lock held elsewhere must not hold the batch for longer.
PAIR_PROBE_MS = 3000


def process_batch(
    items: Sequence[WorkItem], *, model_key: str | None = None, claim: bool = True
) -> BatchOutcome:
    """Run one batch through the active model (or `model_key`, for re-embedding backfills)."""
    settings = get_settings()
    engine = runtime.engine()
    target = runtime.serving(model_key)
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
        fetched = _fetch(claimed, settings)

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
        )
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
            view_size=target.model.view_size,
        )
    for item, exc in batch.failures.items():
        failure = classify(exc)
        sorted_into = outcome.transient if failure.transient else outcome.failed
        sorted_into[item.image_id] = failure.reason

    with timer.stage("forward", record=bool(batch.keys)):
        predictions = target.model.predict(batch.arrays, views=batch.views) if batch.keys else []
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
            # their near-duplicate pairs, in the same transaction (a copy saved at the very
            # same moment by another batch is found by a later copy, or a rehash)
            repository.record_duplicates(
                conn, image_ids=[r.image_id for r in results], timeout_ms=PAIR_PROBE_MS
            )
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


def _fetch(items: Sequence[WorkItem], settings: Settings) -> dict[str, bytes | Exception]:
    """A batch's sources, all at once, under the worker's fetch limits (uploads and
    rehashes read them the same way)."""
    return fetch_all(
        [item.uri for item in items],
        settings.source_policy,
        max_workers=settings.fetch_concurrency,
        per_host=settings.fetch_per_host,
        deadline_s=settings.fetch_timeout_s,
        batch_deadline_s=settings.fetch_batch_deadline_s,
    )


def _gave_up(attempts: int, last_error: str | None) -> str:
    why = last_error or "each attempt ended without a result (worker stopped or timed out)"
    return f"{GAVE_UP_PREFIX}{attempts} attempts: {why}"


def fail_images(image_ids: Sequence[int], error: str) -> None:
    """Give up on images after the last retry, so none is left `processing` for ever."""
    with runtime.engine().begin() as conn:
        for image_id in image_ids:
            repository.mark_failed(conn, image_id=image_id, error=error)
    metrics.report_outcomes(failed=dict.fromkeys(image_ids, error))


__all__ = ["BatchOutcome", "PermanentError", "TransientError", "WorkItem", "fail_images"]


def rehash_batch(items: Sequence[WorkItem]) -> BatchOutcome:
    """Measure done images' perceptual hash and quality again (`vitrine backfill
    --hashes`): fetch and decode as an upload is, no forward pass; a photo that cannot be
    read any more keeps its row as it is and is reported failed here, not in the row."""
    from vitrine.pipeline.inference.preprocess import measure_bytes

    settings = get_settings()
    fetched = _fetch(items, settings)
    outcome = BatchOutcome()
    infos = {}
    for item in items:
        got = fetched[item.uri]
        try:
            if isinstance(got, Exception):
                raise got
            infos[item.image_id] = measure_bytes(got, limits=settings.image_limits)
        except Exception as exc:  # one photo's trouble is its own
            if classify(exc).transient:
                outcome.transient[item.image_id] = str(exc)
            else:  # worded as it always was (vitrine.worker.failures)
                outcome.failed[item.image_id] = failure_reason(exc)
    with runtime.engine().begin() as conn:  # hashes and their pairs together, as for uploads
        repository.save_hashes(conn, infos=infos)
        repository.drop_duplicates(conn, image_ids=list(infos))  # measured anew
        repository.record_duplicates(conn, image_ids=list(infos), timeout_ms=PAIR_PROBE_MS)
    outcome.done = list(infos)
    return outcome
