"""vitrine.worker.processing: how one batch's failures are sorted, with the database and model
faked.

The integration tests run the real thing; this pins the sorting that `process_batch` adds
on top of `vitrine.pipeline.inference.batch.prepare_batch`, which needs neither PostgreSQL nor
TensorFlow.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageDraw

from vitrine.pipeline.types import PreprocessSpec
from vitrine.sources.fetch import PermanentError, TransientError
from vitrine.worker import processing
from vitrine.worker.processing import WorkItem, process_batch


def _png() -> bytes:
    img = Image.new("L", (80, 60), 255)
    ImageDraw.Draw(img).ellipse((10, 10, 50, 50), fill=20)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


class _Fakes:
    """Records what process_batch writes and what the model is asked."""

    def __init__(self) -> None:
        self.saved: list[SimpleNamespace] = []
        self.failed: dict[int, str] = {}
        self.paired: list[int] = []  # images whose near-duplicate pairs were looked for
        self.predicted: list[np.ndarray] = []
        self.unclaimable: set[int] = set()
        self.attempts: dict[int, int] = {}  # claims so far, this one included
        self.known: dict[str, tuple[object, object]] = {}  # sha256 -> (info, prediction)
        self.looked_up: list[list[str]] = []

    @contextmanager
    def begin(self) -> Iterator[object]:
        yield object()

    connect = begin

    def known_results(
        self, conn: object, *, sha256s: list[str], model_id: int
    ) -> dict[str, tuple[object, object]]:
        self.looked_up.append(sorted(sha256s))
        return {sha: self.known[sha] for sha in sha256s if sha in self.known}

    def claim_images(self, conn: object, *, image_ids: list[int]) -> dict[int, object]:
        claimed = {}
        for image_id in image_ids:
            if image_id in self.unclaimable:
                continue
            attempts = self.attempts.get(image_id, 1)
            last_error = "worker killed" if attempts > 1 else None
            claimed[image_id] = SimpleNamespace(
                attempts=attempts, last_error=last_error, merchant_id="m1"
            )
        return claimed

    def save_results(self, conn: object, *, results: list[SimpleNamespace]) -> None:
        self.saved.extend(results)

    def mark_failed(self, conn: object, *, image_id: int, error: str) -> None:
        self.failed[image_id] = error

    def record_duplicates(self, conn: object, *, image_ids: list[int], **_: object) -> int:
        self.paired.extend(image_ids)
        return 0

    def predict(self, x: np.ndarray, views: np.ndarray | None = None) -> list[str]:
        assert views is None  # this model has no unknown detector: no object views made
        self.predicted.append(x)
        return [f"prediction {i}" for i in range(len(x))]


BLOBS: dict[str, bytes | Exception] = {
    "good-1": _png(),
    "gone": PermanentError("HTTP 404 fetching gone"),
    "slow": TransientError("HTTP 503 fetching slow"),
    "text": b"this is not an image",
    "odd": RuntimeError("plugin exploded"),
    "good-2": _png(),
}


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> _Fakes:
    fake = _Fakes()
    target = SimpleNamespace(
        row=SimpleNamespace(id=7, name="fake", version="1"),
        model=SimpleNamespace(
            spec=SimpleNamespace(preprocess=PreprocessSpec()),
            predict=fake.predict,
            view_size=None,
        ),
    )
    monkeypatch.setattr(processing.runtime, "engine", lambda: fake)
    monkeypatch.setattr(processing.runtime, "serving", lambda key=None: target)
    repo = SimpleNamespace(
        claim_images=fake.claim_images,
        save_results=fake.save_results,
        mark_failed=fake.mark_failed,
        record_duplicates=fake.record_duplicates,
        known_results=fake.known_results,
        ImageResult=lambda **kw: SimpleNamespace(**kw),
    )
    monkeypatch.setattr(processing, "repository", repo)

    def fetch_all(uris: list[str], policy: object, **limits: object) -> dict[str, object]:
        return {uri: BLOBS[uri] for uri in uris}  # bytes, or the exception fetching raised

    monkeypatch.setattr(processing, "fetch_all", fetch_all)
    return fake


def test_each_image_fails_or_succeeds_on_its_own(fakes: _Fakes) -> None:
    items = [WorkItem(image_id=i, uri=uri) for i, uri in enumerate(BLOBS, start=1)]
    fakes.unclaimable = {len(items) + 1}
    items.append(WorkItem(image_id=len(items) + 1, uri="good-1"))  # already done elsewhere

    outcome = process_batch(items)

    assert outcome.done == [1, 6]
    assert outcome.skipped == [7]
    assert outcome.transient == {3: "HTTP 503 fetching slow"}
    assert list(outcome.failed) == [2, 4, 5]
    assert outcome.failed[2] == "HTTP 404 fetching gone"  # the fetch layer's words, as they are
    assert outcome.failed[4].startswith("not an image (unrecognised format; accepted: JPEG")
    assert outcome.failed[5] == "could not process image: RuntimeError: plugin exploded"
    assert fakes.failed == outcome.failed  # transient rows are left for the retry
    (x,) = fakes.predicted  # one forward pass for the batch
    assert x.shape == (2, 28, 28, 1) and x.dtype == np.float32
    assert [(r.image_id, r.model_id, r.prediction) for r in fakes.saved] == [
        (1, 7, "prediction 0"),
        (6, 7, "prediction 1"),
    ]
    assert all(
        r.info.format == "PNG" and (r.info.width, r.info.height) == (80, 60) for r in fakes.saved
    )
    assert fakes.paired == [1, 6]  # pairs looked for once the results committed, done ones only


def test_a_batch_where_nothing_preprocesses_runs_no_forward_pass(fakes: _Fakes) -> None:
    outcome = process_batch([WorkItem(1, "gone"), WorkItem(2, "slow")], claim=False)
    assert outcome.done == [] and fakes.predicted == [] and fakes.saved == []
    assert outcome.failed == {1: "HTTP 404 fetching gone"}
    assert outcome.transient == {2: "HTTP 503 fetching slow"}


def test_an_upload_that_keeps_killing_its_worker_ends_failed(fakes: _Fakes) -> None:
    """Claimed max_attempts times without a result: the next claim fails it, unprocessed."""
    from vitrine.settings import get_settings

    limit = get_settings().max_attempts
    fakes.attempts = {1: limit, 2: limit + 1}
    outcome = process_batch([WorkItem(1, "good-1"), WorkItem(2, "good-1")])
    assert outcome.done == [1]
    assert outcome.failed == {2: f"gave up after {limit} attempts: worker killed"}
    assert fakes.failed == outcome.failed
    (x,) = fakes.predicted
    assert len(x) == 1  # the poison upload never reached the decoder or the model


def test_known_bytes_reuse_the_stored_result_with_no_forward_pass(fakes: _Fakes) -> None:
    """An upload whose bytes this model has seen is saved from the stored result: neither
    decoded nor passed through the model. Unknown bytes in the same batch still are."""
    import hashlib

    known_sha = hashlib.sha256(BLOBS["good-1"]).hexdigest()  # (good-2 has the same bytes)
    fakes.known[known_sha] = ("stored info", "stored prediction")
    outcome = process_batch([WorkItem(1, "good-1"), WorkItem(2, "good-2")])
    assert outcome.done == [1, 2] and fakes.predicted == []  # the model was not called
    assert fakes.looked_up == [[known_sha, known_sha]]
    assert [(r.image_id, r.info, r.prediction) for r in fakes.saved] == [
        (1, "stored info", "stored prediction"),
        (2, "stored info", "stored prediction"),
    ]

    fakes.saved.clear()
    outcome = process_batch([WorkItem(3, "good-1"), WorkItem(4, "text")], claim=False)
    assert outcome.done == [3] and list(outcome.failed) == [4]
    assert fakes.predicted == []  # the unknown file failed decoding; nothing to forward


def test_reuse_can_be_turned_off(fakes: _Fakes, monkeypatch: pytest.MonkeyPatch) -> None:
    """`VITRINE_REUSE_KNOWN_BYTES=0` (the ingest benchmark): known bytes are processed."""
    import hashlib

    from vitrine.settings import get_settings

    fakes.known[hashlib.sha256(BLOBS["good-1"]).hexdigest()] = ("info", "prediction")
    monkeypatch.setenv("VITRINE_REUSE_KNOWN_BYTES", "0")
    get_settings.cache_clear()
    try:
        outcome = process_batch([WorkItem(1, "good-1")], claim=False)
    finally:
        monkeypatch.delenv("VITRINE_REUSE_KNOWN_BYTES")
        get_settings.cache_clear()
    assert outcome.done == [1] and fakes.looked_up == []
    (x,) = fakes.predicted
    assert len(x) == 1 and fakes.saved[0].prediction == "prediction 0"
