"""`vitrine worker-check`: is the worker on this host alive? (vitrine.worker.health writes the
beat.)

Fresh heartbeat file: the worker's main process is looping and connected. `--ping` also
asks the broker for that worker's node (`celery inspect ping`), which answers only if the
worker reads its control messages.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from vitrine.ops.context import Context
from vitrine.worker.celery_app import app


@dataclass(frozen=True)
class WorkerHealth:
    ok: bool
    message: str  # one line, what is wrong or what was seen


def check_heartbeat(path: Path, max_age: float, now: float | None = None) -> WorkerHealth:
    """Fresh when `path` was touched at most `max_age` seconds ago."""
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return WorkerHealth(False, f"no heartbeat file {path}: no worker has run here")
    except OSError as exc:
        return WorkerHealth(False, f"cannot read heartbeat file {path}: {exc.strerror}")
    age = (time.time() if now is None else now) - mtime
    if age > max_age:
        return WorkerHealth(
            False,
            f"heartbeat {path} is {age:.0f} s old (max {max_age:g} s): worker stopped or stuck",
        )
    return WorkerHealth(True, f"heartbeat {age:.1f} s old")


def heartbeat_node(path: Path) -> str | None:
    """The node name the worker wrote into its heartbeat file."""
    try:
        node = json.loads(path.read_text()).get("node")
    except (OSError, ValueError, AttributeError):
        return None
    return node if isinstance(node, str) else None


def ping(ctx: Context, node: str, timeout: float = 5.0) -> bool:
    """Whether `node` answers a control ping through the broker within `timeout`."""
    ctx.broker_url()
    replies = app.control.ping(destination=[node], timeout=timeout)
    return any(node in reply for reply in replies)


def check_worker(ctx: Context, *, max_age: float, with_ping: bool) -> WorkerHealth:
    path = ctx.settings.heartbeat_path
    health = check_heartbeat(path, max_age)
    if not health.ok or not with_ping:
        return health
    node = heartbeat_node(path)
    if node is None:
        return WorkerHealth(False, f"heartbeat file {path} names no worker node to ping")
    try:
        answered = ping(ctx, node)
    except Exception as exc:  # broker unreachable, refused, ...: say so in one line
        return WorkerHealth(False, f"cannot ping {node}: {exc.__class__.__name__}: {exc}")
    if not answered:
        return WorkerHealth(False, f"worker {node} did not answer a ping")
    return WorkerHealth(True, f"{health.message}; {node} answered a ping")
