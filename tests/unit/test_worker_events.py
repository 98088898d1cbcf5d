"""vitrine.worker.events and vitrine.worker.failures: the one upload event, the one
failure classifier and the one retry policy, without a broker or a database."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from sqlalchemy.exc import DBAPIError, OperationalError

from vitrine.settings import get_settings
from vitrine.sources.fetch import PermanentError, TransientError
from vitrine.worker.events import ReviewEvent, UploadEvent
from vitrine.worker.failures import DATABASE_ERRORS, RetryPolicy, classify


def test_a_platform_event_is_read_and_written_back_as_it_came() -> None:
    sent = {"uri": "https://c/1.jpg", "merchant_id": "m-1", "sku": "S", "declared_label": "Dress"}
    event = UploadEvent.from_kwargs(sent)
    assert event.kwargs() == sent and list(event.kwargs()) == list(sent)
    upload = event.upload("task-1")
    assert (upload.uri, upload.merchant_id, upload.sku, upload.declared_label) == (
        "https://c/1.jpg",
        "m-1",
        "S",
        "Dress",
    )
    assert upload.event_id == "task-1"


def test_a_resent_event_keeps_the_order_the_live_path_always_wrote() -> None:
    """Before the typed event, a re-send was `{**event, "image_id": i, "attempt": n}`."""
    sent = {"uri": "u", "merchant_id": "m", "sku": None, "declared_label": "Top"}
    again = UploadEvent.from_kwargs({**sent, "image_id": 7, "attempt": 2}).kwargs()
    assert list(again.items()) == [*sent.items(), ("image_id", 7), ("attempt", 2)]
    ours = {"uri": "u", "merchant_id": "m", "sku": None, "image_id": 3}  # worker.client's
    assert list(UploadEvent.from_kwargs(ours).kwargs().items()) == list(ours.items())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"merchant_id": "m"}, "an upload event needs `uri` and `merchant_id`"),
        ({"uri": "u", "merchant_id": ""}, "an upload event needs `uri` and `merchant_id`"),
        ({"uri": "u", "merchant_id": "m", "declared_label": 3}, "`declared_label` must be text"),
        ({"uri": "u", "merchant_id": "m", "attempt": "x"}, "`attempt` must be a whole number"),
    ],
)
def test_a_malformed_upload_is_a_one_line_value_error(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError) as info:
        UploadEvent.from_kwargs(kwargs)
    assert type(info.value) is ValueError and str(info.value) == message


def test_a_review_event_needs_its_listing() -> None:
    sent = {"uri": "u", "merchant_id": "m", "sku": "S", "review_ref": None}
    assert ReviewEvent.from_kwargs({"uri": "u", "merchant_id": "m", "sku": "S"}).kwargs() == sent
    with pytest.raises(ValueError, match=r"needs `uri`, `merchant_id` and `sku` \(sku\)"):
        ReviewEvent.from_kwargs({"uri": "u", "merchant_id": "m", "sku": " "})
    with pytest.raises(ValueError, match="`review_ref` must be text"):
        ReviewEvent.from_kwargs({**sent, "review_ref": 5})


def test_failures_are_sorted_once() -> None:
    assert classify(TransientError("503 from c")) == (t := classify(TransientError("503 from c")))
    assert t.transient and t.reason == "503 from c"
    refused = classify(PermanentError("not an image"))
    assert not refused.transient and refused.reason == "not an image"
    odd = classify(RuntimeError("plugin exploded"))
    assert (
        not odd.transient and odd.reason == "could not process image: RuntimeError: plugin exploded"
    )
    assert DATABASE_ERRORS == (OperationalError, DBAPIError)


def test_the_retry_policy_is_the_settings_and_celerys_own_options() -> None:
    settings = get_settings()
    policy = RetryPolicy.from_settings(settings)
    assert policy.task_options() == {
        "bind": True,
        "autoretry_for": (OperationalError, DBAPIError),
        "max_retries": settings.max_retries,
        "retry_backoff": settings.retry_backoff_s,
        "retry_backoff_max": settings.retry_backoff_max_s,
        "retry_jitter": True,
    }
    task = SimpleNamespace(max_retries=3, retry_backoff=2, retry_backoff_max=5, retry_jitter=True)
    of_task = RetryPolicy.of_task(task)  # type: ignore[arg-type]
    assert (of_task.exhausted(2), of_task.exhausted(3)) == (False, True)
    assert all(0 <= of_task.countdown(n) <= min(5, 2 * 2**n) for n in range(6) for _ in range(20))
    assert RetryPolicy.gave_up(2, "503") == "gave up after 3 tries: 503"


def test_the_api_refuses_a_review_the_workers_would_fail() -> None:
    from vitrine.ops.api_uploads import review_event
    from vitrine.ops.errors import UserError

    assert review_event("u", "m", "S", None) == ReviewEvent("u", "m", "S")
    with pytest.raises(UserError, match=r"^a review event needs .* \(sku\)$"):
        review_event("u", "m", "  ", None)
