"""The worker's heartbeat file, for `vitrine worker-check` and container health checks.

A consumer bootstep touches `VITRINE_HEARTBEAT_FILE` every `VITRINE_HEARTBEAT_INTERVAL_S`
from the consumer's own event loop (the timer Celery's heartbeats use), so the file stays
fresh only while the worker's main process is connected and looping: a wedged loop or a
lost broker connection stops it. The file holds the worker's node name, which
`worker-check --ping` asks the broker about.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from celery import bootsteps

from vitrine.settings import get_settings

log = logging.getLogger(__name__)


def touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError as exc:  # a full or read-only disk must not stop the worker
        log.warning("heartbeat %s not touched: %s", path, exc)


def write_heartbeat(path: Path, node: str) -> None:
    """(Re)write the heartbeat file: who beats, which process; its mtime is the beat."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"node": node, "pid": os.getpid()}) + "\n")
    tmp.replace(path)


class Heartbeat(bootsteps.StartStopStep):
    """Consumer step: writes the heartbeat file on start, touches it on the consumer's timer."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.tref: Any = None

    def start(self, parent: Any) -> None:
        settings = get_settings()
        path = settings.heartbeat_path
        try:
            write_heartbeat(path, parent.hostname)
        except OSError as exc:
            log.warning("heartbeat file %s not written: %s", path, exc)
        self.tref = parent.timer.call_repeatedly(settings.heartbeat_interval_s, touch, (path,))

    def stop(self, parent: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    shutdown = stop
