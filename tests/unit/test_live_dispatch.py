"""vitrine.worker.live.LiveBatches with a fake pool: a batch leaves when a process is free
for it, events gather while every process is busy, and a process's return (or its loss)
sends what gathered; no batch is larger than `flush_every`."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery

from vitrine.worker import live


class _Request:
    def __init__(self, name: str) -> None:
        self.name, self.eta, self.outcome = name, None, "waiting"

    def acknowledge(self) -> None:
        self.outcome = "acknowledged"

    def reject(self, requeue: bool = False) -> None:
        self.outcome = "handed back" if requeue else "dropped"


class _Pool:
    """Records each job; the test returns or loses them when it chooses."""

    def __init__(self, processes: int) -> None:
        self.num_processes = processes
        self.jobs: list[dict[str, Any]] = []

    def apply_async(self, fun: Any, args: tuple[Any, ...], **options: Any) -> None:
        self.jobs.append({"batch": [r.name for r in args[1][0]], **options})

    def finish(self, job: int, result: Any = "returned") -> None:
        self.jobs[job]["callback"](result)

    def lose(self, job: int) -> None:
        self.jobs[job]["error_callback"](RuntimeError("process lost"))


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(live.SimpleRequest, "from_request", staticmethod(lambda r: r))
    app = Celery("dispatch-test", set_as_current=False)

    @app.task(base=live.LiveBatches, flush_every=3, flush_interval=600, shared=False)
    def ingest(requests: list[Any]) -> None:
        return None

    ingest._pool = _Pool(processes=2)
    return ingest


def _arrive(task: Any, name: str) -> _Request:
    """What the consumer strategy does with an event: buffer it, then send it if it can."""
    request = _Request(name)
    task._buffer.put(request)
    task._flush_if_idle()
    return request


def test_free_processes_take_events_at_once_and_a_return_sends_what_gathered(
    batches: Any,
) -> None:
    pool = batches._pool
    first, second = _arrive(batches, "a"), _arrive(batches, "b")
    assert [j["batch"] for j in pool.jobs] == [["a"], ["b"]]  # one each, no waiting
    gathered = [_arrive(batches, n) for n in "cde"]
    assert len(pool.jobs) == 2  # both processes busy: c, d, e wait together
    pool.finish(0)
    assert first.outcome == "acknowledged" and second.outcome == "waiting"
    assert pool.jobs[2]["batch"] == ["c", "d", "e"]
    assert all(r.outcome == "waiting" for r in gathered)
    _arrive(batches, "f")
    assert len(pool.jobs) == 3  # b and c-d-e still run on the two processes
    pool.lose(1)  # b's process died: b is handed back, and its place takes f
    assert second.outcome == "handed back"
    assert pool.jobs[3]["batch"] == ["f"]


def test_a_batch_that_raised_is_handed_back_and_frees_its_process(batches: Any) -> None:
    pool = batches._pool
    request = _arrive(batches, "a")
    pool.finish(0, result=None)  # apply_batches_task's None: the batch function raised
    assert request.outcome == "handed back"
    _arrive(batches, "b"), _arrive(batches, "c")
    assert [j["batch"] for j in pool.jobs[1:]] == [["b"], ["c"]]


def test_what_gathered_leaves_in_batches_of_flush_every(batches: Any) -> None:
    for name in "abcdefg":
        batches._buffer.put(_Request(name))
    batches._do_flush()
    assert [j["batch"] for j in batches._pool.jobs] == [["a", "b", "c"], ["d", "e", "f"], ["g"]]
