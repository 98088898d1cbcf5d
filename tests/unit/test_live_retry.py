"""vitrine.worker.live with a fake broker: malformed events fail alone, transient ones are
re-sent as they came (plus `image_id` and `attempt`) under the tasks' retry policy."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from vitrine.settings import get_settings
from vitrine.worker import live
from vitrine.worker.processing import BatchOutcome


class _App:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.failures: dict[str, Exception] = {}
        self.backend = SimpleNamespace(mark_as_failure=self._fail)

    def _fail(self, task_id: str, exc: Exception, request: object = None) -> None:
        self.failures[task_id] = exc

    def send_task(self, name: str, **options: Any) -> None:
        self.sent.append({"name": name, **options})


def _req(task_id: str, **kwargs: Any) -> Any:
    return SimpleNamespace(id=task_id, kwargs=kwargs, ignore_result=False)


def test_a_malformed_event_fails_alone_with_a_value_error() -> None:
    app = _App()
    got = live.handle_events(app, [_req("t1", uri="u"), _req("t2", merchant_id="m")])  # type: ignore[arg-type]
    assert got == {"events": 2, "done": 0}
    assert {k: (type(v), str(v)) for k, v in app.failures.items()} == {
        t: (ValueError, "an upload event needs `uri` and `merchant_id`") for t in ("t1", "t2")
    }
    assert not app.sent


def test_transient_events_are_resent_then_given_up(monkeypatch: pytest.MonkeyPatch) -> None:
    limit = get_settings().max_retries
    failed: dict[int, str] = {}
    monkeypatch.setattr(
        live, "fail_images", lambda ids, error: failed.update(dict.fromkeys(ids, error))
    )
    app = _App()
    platform = {"uri": "u1", "merchant_id": "m", "sku": None, "declared_label": "Top"}
    events = [
        (_req("t1"), live.UploadEvent.from_kwargs(platform)),
        (
            _req("t2"),
            live.UploadEvent.from_kwargs({"uri": "u2", "merchant_id": "m", "attempt": limit}),
        ),
    ]
    outcome = BatchOutcome(transient={1: "503", 2: "timeout"})
    retried = live._retry_transient(app, events, [1, 2], outcome)  # type: ignore[arg-type]
    assert retried == {1}
    assert failed == {2: f"gave up after {limit + 1} tries: timeout"} == outcome.failed
    (sent,) = app.sent
    assert list(sent["kwargs"].items()) == [*platform.items(), ("image_id", 1), ("attempt", 1)]
    assert (sent["name"], sent["task_id"], sent["queue"]) == ("vitrine.ingest", "t1", "uploads")
    assert 0 <= sent["countdown"] <= get_settings().retry_backoff_s
