"""Faults during an ingest of 2,000 uploads, with real processes, and what must hold after
each: every upload `done` (or `failed` with a reason) exactly once, one prediction and one
embedding per done image, nothing left `pending` or `processing`.

Each test registers its own 2,000 uploads, publishes them to a worker of its own (fast
reaper: stuck work is re-sent after a few seconds), hurts something mid-ingest, then waits
for the database to say the ingest settled.

The fault worker and its messages live in a Redis database of their own (FAULT_REDIS_DB),
emptied before each test: the session's worker, which other tests start and which
consumes the same queue names, must never take a fault test's work. When it could, a kill
landed on a fault worker that held nothing while the session worker held the claim, and
the "claimed twice" evidence was missing although nothing had gone wrong.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from sqlalchemy import Engine, text

from tests.integration.conftest import N_SMALL as N_UPLOADS
from vitrine.ops.uploads import file_uri, register_uploads
from vitrine.pipeline.types import Upload

pytestmark = [pytest.mark.integration, pytest.mark.slow]


#: The fault workers' broker: this Redis database number, not the session's.
FAULT_REDIS_DB = 7
#: The fault workers' reaper: a sweep a second, work stuck for 8 s is sent again.
FAST_REAPER = {"VITRINE_REAPER_INTERVAL_S": "1", "VITRINE_STALE_AFTER_S": "8"}


@dataclass
class Ingest:
    merchant: str
    ids: list[int]
    engine: Engine
    path: str  # "bulk": batch tasks of 64 registered uploads; "live": one event per upload

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT status, count(*) FROM images WHERE merchant_id = :m GROUP BY status"),
                {"m": self.merchant},
            ).all()
        return {status: int(n) for status, n in rows}

    def wait(self, predicate: Callable[[dict[str, int]], bool], timeout: float, what: str) -> None:
        """Poll the rows (there is no event to subscribe to) until `predicate` holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.counts()):
                return
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}: {self.counts()}")

    def wait_settled(self, timeout: float = 300) -> None:
        self.wait(lambda c: not c.get("pending") and not c.get("processing"), timeout, "settle")

    def assert_exactly_once(self) -> dict[str, int]:
        """The promise: every upload ended once, nothing lost, nothing duplicated."""
        with self.engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT count(*) AS images,"
                    " count(*) FILTER (WHERE status = 'done') AS done,"
                    " count(*) FILTER (WHERE status = 'failed') AS failed,"
                    " count(*) FILTER (WHERE status = 'failed' AND coalesce(error, '') = '')"
                    "   AS failed_without_reason,"
                    " (SELECT count(*) FROM predictions p JOIN images i ON i.id = p.image_id"
                    "   WHERE i.merchant_id = :m) AS predictions,"
                    " (SELECT count(*) FROM embeddings e JOIN images i ON i.id = e.image_id"
                    "   WHERE i.merchant_id = :m) AS embeddings,"
                    " (SELECT count(*) FROM (SELECT image_id FROM predictions p"
                    "   JOIN images i ON i.id = p.image_id WHERE i.merchant_id = :m"
                    "   GROUP BY image_id, model_id HAVING count(*) > 1) d) AS duplicated"
                    " FROM images WHERE merchant_id = :m"
                ),
                {"m": self.merchant},
            ).one()
        result = dict(row._mapping)
        assert result["images"] == N_UPLOADS, result  # nothing lost, nothing added
        assert result["done"] + result["failed"] == N_UPLOADS, result  # none left in flight
        assert result["failed_without_reason"] == 0, result
        assert result["predictions"] == result["embeddings"] == result["done"], result
        assert result["duplicated"] == 0, result
        assert result["done"] == N_UPLOADS, result  # these photos are all good ones
        return result


@pytest.fixture(params=["bulk", "live"])
def ingest(request, engine: Engine, small_catalog: list[Path]) -> Ingest:  # type: ignore[no-untyped-def]
    """2,000 registered uploads of a merchant of their own, to go the `request.param` way."""
    merchant = f"m-fault-{uuid.uuid4().hex[:10]}"
    uploads = [Upload(uri=file_uri(p), merchant_id=merchant) for p in small_catalog]
    ids = [r.image_id for r in register_uploads(engine, uploads)]
    return Ingest(merchant, ids, engine, request.param)


def fault_broker(ctx) -> str:  # type: ignore[no-untyped-def]
    """The session's Redis, at the fault tests' own database number."""
    url = urlsplit(ctx.broker_url())
    return urlunsplit(url._replace(path=f"/{FAULT_REDIS_DB}"))


def publish(ctx, ingest: Ingest, small_catalog: list[Path], batch: int = 64) -> None:  # type: ignore[no-untyped-def]
    """Bulk: batch tasks of 64, as `vitrine ingest` sends them. Live: one `vitrine.ingest`
    event per upload, as `vitrine submit` sends them, micro-batched by the worker. Both
    onto the uploads queue of the fault broker, which nothing but the fault worker reads."""
    from vitrine.worker.celery_app import app
    from vitrine.worker.names import INGEST_BATCH_TASK, INGEST_TASK

    items = [
        {"image_id": i, "uri": file_uri(p)} for i, p in zip(ingest.ids, small_catalog, strict=True)
    ]
    with app.connection_for_write(fault_broker(ctx)) as connection:
        if ingest.path == "live":
            for item in items:
                kwargs = {**item, "merchant_id": ingest.merchant, "sku": None}
                app.send_task(INGEST_TASK, kwargs=kwargs, connection=connection, ignore_result=True)
            return
        for start in range(0, len(items), batch):
            app.send_task(
                INGEST_BATCH_TASK,
                kwargs={"items": items[start : start + batch]},
                connection=connection,
                ignore_result=True,
            )


@pytest.fixture(autouse=True)
def empty_fault_broker(ctx) -> None:  # type: ignore[no-untyped-def]
    """Each test starts with no message of an earlier one (a warm shutdown puts back what
    its worker had prefetched)."""
    import redis

    with redis.Redis.from_url(fault_broker(ctx)) as client:
        client.flushdb()


@contextmanager
def fault_worker(ctx, name: str) -> Iterator[subprocess.Popen[bytes]]:  # type: ignore[no-untyped-def]
    from vitrine.embedded.launcher import running_worker
    from vitrine.embedded.services import ServiceURLs

    log = ctx.settings.data_dir / "logs" / f"fault-{name}.log"
    log.unlink(missing_ok=True)
    with running_worker(
        ServiceURLs(ctx.urls().database_url, fault_broker(ctx)),
        concurrency=2,
        log_path=log,
        extra_env=FAST_REAPER,
    ) as proc:
        try:
            yield proc
        except BaseException:  # a failed fault shows what its worker said (the tail)
            print(f"--- {log.name}, last 60 lines ---")
            print("\n".join(log.read_text(errors="replace").splitlines()[-60:]))
            raise


def worker_log(ctx, name: str) -> str:  # type: ignore[no-untyped-def]
    return (ctx.settings.data_dir / "logs" / f"fault-{name}.log").read_text(errors="replace")


def wait_for_log(ctx, name: str, needles: tuple[str, ...], timeout: float = 120) -> None:  # type: ignore[no-untyped-def]
    """Poll the fault worker's log (a file is all it tells) until one of `needles` shows."""
    deadline = time.monotonic() + timeout
    while not any(n in (log := worker_log(ctx, name)) for n in needles):
        assert time.monotonic() < deadline, f"none of {needles} in the log: {log[-2000:]}"
        time.sleep(0.2)


def reclaimed(ingest: Ingest) -> int:
    """Uploads whose work was started more than once: the evidence a fault hit mid-work."""
    with ingest.engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM images WHERE merchant_id = :m AND attempts > 1"),
                {"m": ingest.merchant},
            ).scalar_one()
        )


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]


def started(ingest: Ingest, n: int = 300) -> Callable[[dict[str, int]], bool]:
    return lambda c: c.get("done", 0) >= n


def kill_mid_work(ingest: Ingest, pids: Callable[[], list[int]], timeout: float = 120) -> None:
    """SIGKILL `pids()` at a moment some upload is claimed and unsaved, whatever the
    machine's load: the processes are frozen (SIGSTOP), the rows read, and only if a claim
    is open are they killed; else they go on (SIGCONT) and the next look comes. While they
    are frozen nothing can commit, so what the rows say is what the kill interrupts (a
    look between two live micro-batches finds nothing claimed, and tries again)."""
    ingest.wait(started(ingest), timeout, "the ingest to be under way")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frozen = pids()
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        # A COMMIT the worker sent just before it froze still completes on the server: the
        # rows are read once no statement of anyone else is running, or a batch that was in
        # fact saved would count as interrupted (seen on a loaded machine: 0 reclaimed).
        _until_no_statement_runs(ingest)
        if ingest.counts().get("processing", 0) > 0:
            for pid in frozen:
                os.kill(pid, signal.SIGKILL)
            return
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        time.sleep(0.1)  # the poll interval: the worker runs until the next look
    raise AssertionError(f"no batch was claimed at any look: {ingest.counts()}")


def _until_no_statement_runs(ingest: Ingest, timeout: float = 30) -> None:
    """Wait until no other session of the database is executing a statement."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
        "AND state = 'active' AND pid <> pg_backend_pid()"
    )
    deadline = time.monotonic() + timeout
    with ingest.engine.connect() as conn:
        while conn.execute(query).scalar_one() > 0:
            assert time.monotonic() < deadline, "a statement kept running with the worker frozen"
            conn.rollback()
            time.sleep(0.01)


def _group(pid: int) -> list[int]:
    """A worker's main process and its pool children."""
    return [pid, *_children(pid)]


@contextmanager
def frozen(ingest: Ingest, pids: list[int]) -> Iterator[None]:
    """The worker stopped (SIGSTOP) while a server goes down, so the fault finds work
    left to do however fast this machine is: the precondition is checked, not hoped for."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        left = ingest.counts()
        assert left.get("pending", 0) + left.get("processing", 0) > 0, left
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


# --------------------------------------------------------------------------- the faults


def test_a_worker_child_killed_mid_batch(ctx, ingest: Ingest, small_catalog) -> None:  # type: ignore[no-untyped-def]
    with fault_worker(ctx, "child") as proc:
        publish(ctx, ingest, small_catalog)
        # Every pool child at once: the one holding a claimed, unsaved batch is among them
        # (killing one child alone sometimes hit the one waiting between batches).
        kill_mid_work(ingest, lambda: _children(proc.pid))
        ingest.wait_settled()
        assert proc.poll() is None  # the pool replaced its child
    result = ingest.assert_exactly_once()
    assert reclaimed(ingest) >= 1, result  # the killed batch was done again, not lost


def test_the_whole_worker_killed_then_started_again(ctx, ingest: Ingest, small_catalog) -> None:  # type: ignore[no-untyped-def]
    with fault_worker(ctx, "whole-1") as proc:
        publish(ctx, ingest, small_catalog)
        kill_mid_work(ingest, lambda: _group(proc.pid))  # no warm shutdown
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # anything else of its process group
        except ProcessLookupError:
            pass
        proc.wait()
    assert ingest.counts().get("done", 0) < N_UPLOADS
    with fault_worker(ctx, "whole-2"):
        ingest.wait_settled()
    result = ingest.assert_exactly_once()
    # Claimed by the dead worker, finished by the new one. Which process sent the claims
    # again is not the promise (the reaper's own test is test_failures.py): one CI run on a
    # loaded machine settled with no "reaper sent" in this worker's log.
    assert reclaimed(ingest) >= 1, (result, worker_log(ctx, "whole-2")[-4000:])


def _stop_redis(ctx, *, keep_data: bool) -> None:  # type: ignore[no-untyped-def]
    from vitrine.embedded.services import stop_services

    settings = ctx.settings.model_copy(update={"database_url": None, "redis_url": None})
    assert stop_services(settings, ["redis"]) == ["redis"]
    if not keep_data:  # a broker that kept nothing: its queues and unacked messages are gone
        for leftover in (settings.embedded_dir / "redis").glob("appendonly*"):
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()


def _start_redis(ctx) -> None:  # type: ignore[no-untyped-def]
    from vitrine.embedded.services import ensure_service

    settings = ctx.settings.model_copy(update={"database_url": None, "redis_url": None})
    assert ensure_service(settings, "redis") == ctx.broker_url()  # same port again


@pytest.mark.parametrize("keep_data", [True, False], ids=["append-only-file", "kept-nothing"])
def test_redis_restarted(ctx, ingest: Ingest, small_catalog, keep_data: bool) -> None:  # type: ignore[no-untyped-def]
    if os.environ.get("VITRINE_EXTERNAL_SERVICES"):
        pytest.fail("needs the embedded Redis, which the test stops and starts")
    with fault_worker(ctx, f"redis-{keep_data}") as proc:
        publish(ctx, ingest, small_catalog)
        ingest.wait(started(ingest), 120, "the ingest to be under way")
        with frozen(ingest, _group(proc.pid)):
            _stop_redis(ctx, keep_data=keep_data)
        _start_redis(ctx)  # meanwhile the worker met the broker gone
        ingest.wait_settled()
        assert proc.poll() is None  # the worker reconnected by itself
    ingest.assert_exactly_once()
    log = worker_log(ctx, f"redis-{keep_data}")
    assert "Connection to broker lost" in log or "Cannot connect to redis" in log  # it was hit
    if not keep_data:  # nothing was left in the broker: the reaper recovered the uploads
        assert "reaper sent" in log


def _stop_postgres(ctx) -> None:  # type: ignore[no-untyped-def]
    from vitrine.embedded.services import stop_services

    settings = ctx.settings.model_copy(update={"database_url": None, "redis_url": None})
    assert stop_services(settings, ["postgres"]) == ["postgres"]


def _start_postgres(ctx) -> None:  # type: ignore[no-untyped-def]
    from vitrine.embedded.services import ensure_service

    settings = ctx.settings.model_copy(update={"database_url": None, "redis_url": None})
    assert ensure_service(settings, "postgres") == ctx.database_url()


@pytest.mark.parametrize("outage_s", [0, 60], ids=["restart", "down-60s"])
def test_postgres_restarted_or_down(ctx, ingest: Ingest, small_catalog, outage_s: int) -> None:  # type: ignore[no-untyped-def]
    with fault_worker(ctx, f"pg-{outage_s}") as proc:
        publish(ctx, ingest, small_catalog)
        ingest.wait(started(ingest), 120, "the ingest to be under way")
        try:
            with frozen(ingest, _group(proc.pid)):
                _stop_postgres(ctx)
            # The worker goes on with the database gone. A restart it never noticed would
            # test nothing (a pooled connection is pinged and replaced), so the server comes
            # back only once the worker has met it down: plain tasks retry, live batches
            # re-send their events.
            wait_for_log(ctx, f"pg-{outage_s}", ("Retry in", "re-sent"))
            time.sleep(outage_s)  # the outage itself is the fault: nothing to wait for
        finally:
            _start_postgres(ctx)
        ingest.engine.dispose()  # the test's own pooled connections died with the server
        ingest.wait_settled(timeout=400)
        assert proc.poll() is None
    ingest.assert_exactly_once()
