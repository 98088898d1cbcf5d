"""Recovery without a person: uploads whose message was lost get sent again.

A claim that never finished (its worker host vanished, its task ran out of database
retries) leaves an image `processing`; a broker that restarted without its data leaves
images `pending` with no message anywhere. Every `reaper_interval_s`, one worker of the
fleet (the one that wins a PostgreSQL advisory lock) sends such images again as batch
tasks. `processing` counts as stuck after `stale_after_s`; `pending` only while the
queues are empty, since a pending image behind a long queue is waiting, not lost, and
re-sending a backlog would only grow it. Re-sending is harmless: a `done` image is
skipped, and an image that keeps failing ends `failed` after `max_attempts` claims.

It runs as a thread of the worker's main process and opens one short-lived connection
per sweep, so nothing it holds is inherited by pool processes forked later.
"""

from __future__ import annotations

import logging
import threading

from amqp.exceptions import ChannelError
from celery import Celery
from sqlalchemy import func, pool, select

from vitrine.db import repository
from vitrine.db.engine import make_engine
from vitrine.settings import Settings
from vitrine.worker.names import ALL_QUEUES, INGEST_BATCH_TASK, UPLOADS_QUEUE

log = logging.getLogger(__name__)

#: pg_try_advisory_xact_lock key: ASCII "vitrinR".
REAPER_LOCK_KEY = 0x76_69_74_72_69_6E_52
SWEEP_LIMIT = 10_000


class Reaper(threading.Thread):
    def __init__(self, app: Celery, settings: Settings) -> None:
        super().__init__(name="vitrine-reaper", daemon=True)
        self.app = app
        self.settings = settings
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.settings.reaper_interval_s):
            try:
                self.sweep()
            except Exception:  # a sweep that fails (database down) is tried again next time
                log.warning(
                    "reaper sweep failed; retrying in %ss",
                    self.settings.reaper_interval_s,
                    exc_info=True,
                )

    def stop(self) -> None:
        self.stopping.set()

    def queued_messages(self) -> int:
        """Messages waiting in vitrine's queues (a queue never declared holds none)."""
        total = 0
        with self.app.connection_for_write() as connection:
            channel = connection.default_channel
            for queue in ALL_QUEUES:
                try:
                    total += channel.queue_declare(queue=queue, passive=True).message_count
                except ChannelError:
                    continue
        return total

    def sweep(self) -> int:
        """Send stuck uploads again; the number sent (0 when another worker holds the lock)."""
        url = self.settings.database_url
        if not url:
            return 0
        statuses = ("processing",) if self.queued_messages() else ("pending", "processing")
        engine = make_engine(url, poolclass=pool.NullPool)
        try:
            with engine.begin() as conn:
                if not conn.execute(
                    select(func.pg_try_advisory_xact_lock(REAPER_LOCK_KEY))
                ).scalar():
                    return 0
                stuck = repository.requeue_stale(
                    conn,
                    older_than_s=self.settings.stale_after_s,
                    limit=SWEEP_LIMIT,
                    statuses=statuses,
                )
        finally:
            engine.dispose()
        size = self.settings.batch_size
        for start in range(0, len(stuck), size):
            items = [{"image_id": i, "uri": u} for i, u in stuck[start : start + size]]
            self.app.send_task(INGEST_BATCH_TASK, kwargs={"items": items}, queue=UPLOADS_QUEUE)
        if stuck:
            log.warning("reaper sent %d stuck upload(s) again", len(stuck))
        return len(stuck)
