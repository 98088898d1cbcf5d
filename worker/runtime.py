"""Long-lived per-process resources: the database engine and the loaded model.

Built lazily and only in the process that uses them, so a Celery parent never imports
TensorFlow or opens connections that forked children would share.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from vitrine.db import repository
from vitrine.db.engine import make_engine
from vitrine.db.types import ModelRow
from vitrine.pipeline.inference.model import LoadedModel, ModelCache
from vitrine.settings import get_settings

_lock = threading.Lock()
_engine: Engine | None = None
_models = ModelCache()


@dataclass(frozen=True)
class ServingModel:
    """A registered model's row and its network, loaded in this process."""

    row: ModelRow
    model: LoadedModel


def engine() -> Engine:
    global _engine
    with _lock:
        if _engine is None:
            url = get_settings().database_url
            if not url:
                raise RuntimeError("DATABASE_URL is not set in this worker process")
            _engine = make_engine(url)
        return _engine


def reset_after_fork() -> None:
    """Drop connections inherited from a parent; the child opens its own."""
    global _engine
    with _lock:
        if _engine is not None:
            _engine.dispose(close=False)
        _engine = None


def _cgroup_cpu_limit(root: Path) -> float | None:
    """The tightest CPU quota (in CPUs: quota / period) over this process's cgroup and its
    ancestors, cgroup v2 (`cpu.max`) or v1 (`cpu.cfs_quota_us` / `cpu.cfs_period_us`);
    None when there is none or nothing can be read. `root` is "/" but for tests."""
    try:
        groups = (root / "proc/self/cgroup").read_text().splitlines()
        mounts = (root / "proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    paths = {}  # "v2" / "v1" -> this process's cgroup path in that hierarchy
    for line in groups:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers:
            paths["v2"] = path
        elif "cpu" in controllers.split(","):
            paths["v1"] = path
    limits = []
    for line in mounts:
        left, _, right = line.partition(" - ")
        fields, kind = left.split(), right.split()
        if len(fields) < 5 or len(kind) < 3:
            continue
        if kind[0] == "cgroup2" and "v2" in paths:
            version = "v2"
        elif kind[0] == "cgroup" and "cpu" in kind[2].split(",") and "v1" in paths:
            version = "v1"
        else:
            continue
        mount_root, mount = fields[3], root / fields[4].lstrip("/")
        cgroup = Path(paths[version])
        # (a container often sees its own cgroup as the mount's root: then the mount itself)
        directory = mount / (
            cgroup.relative_to(mount_root) if cgroup.is_relative_to(mount_root) else ""
        )
        while True:  # this cgroup, then each ancestor up to the mount: the tightest wins
            limits.append(_read_quota(directory, version))
            if directory == mount or directory == directory.parent:
                break
            directory = directory.parent
    found = [limit for limit in limits if limit is not None]
    return min(found) if found else None


def _read_quota(directory: Path, version: str) -> float | None:
    try:
        if version == "v2":
            quota, period = (directory / "cpu.max").read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        quota_us = int((directory / "cpu.cfs_quota_us").read_text())
        period_us = int((directory / "cpu.cfs_period_us").read_text())
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    except (OSError, ValueError, ZeroDivisionError):
        return None


def available_cpus(root: Path = Path("/"), affinity: set[int] | None = None) -> int:
    """CPUs this process may really use: those it may run on (`sched_getaffinity`, where
    there is one) capped by its cgroup's CPU quota, rounded down (at least 1).

    `os.cpu_count()` counts the host: a container limited to 2 CPUs on a 64-core host would
    give each of 2 worker processes 32 TensorFlow threads, 32 times the CPUs they may use,
    and the quota then throttles them (docs/performance.md has the measurement). `root` and
    `affinity` are for tests.
    """
    if affinity is None:
        get_affinity = getattr(os, "sched_getaffinity", None)
        affinity = set(get_affinity(0)) if get_affinity else set(range(os.cpu_count() or 1))
    cpus = max(1, len(affinity))
    quota = _cgroup_cpu_limit(root)
    return cpus if quota is None else max(1, min(cpus, int(quota)))


AUTOGROUP = Path("/proc/self/autogroup")


def yield_cpu(nice: int, autogroup: Path = AUTOGROUP) -> None:
    """Lower this process's CPU priority by `nice`, and its session's where Linux groups
    the scheduling by session (autogroup, on by default on desktop and many server
    kernels).

    With autogroup a nice value only ranks a process against others of its own session:
    a backfill worker started in its own session (`vitrine worker` under a service
    manager, or the bench's) at nice 10 still took half of 2 cores from the live worker's
    session, and live uploads waited 1.5 s (p50) instead of yielding. The session's
    autogroup nice is what ranks sessions (sched(7)); it is raised, never lowered, only
    where the kernel has it, and only when the session is the worker's own (it leads it,
    or its parent does: a pool process). A worker started from a person's shell shares
    the shell's session with whatever else runs there, a live worker perhaps: there the
    plain nice already ranks them. `autogroup` is for tests."""
    os.nice(nice)
    if os.getsid(0) not in (os.getpid(), os.getppid()):
        return
    try:
        current = int(autogroup.read_text().split("nice")[-1])
        if current < nice:
            autogroup.write_text(str(nice))
    except (OSError, ValueError):
        pass  # no autogroup (kernel without it, a container's read-only /proc): nice is all


def configure_threads() -> None:
    """Split the CPUs this process may use (`available_cpus`) between worker processes
    instead of letting each take all cores: TensorFlow's intra-op threads and the BLAS
    threads of numpy's matrix products, per process.

    BLAS matters as much as TensorFlow here: after each product (the unknown detector's
    cosine to its centroids, one view at a time) OpenBLAS leaves a thread per core
    spinning for work, which on 2 cores with 2 pool processes took the other process's
    CPU and doubled the detector's cost per view (34.6 to 16.3 ms of CPU,
    docs/performance.md)."""
    settings = get_settings()
    per_process = max(1, available_cpus() // max(1, settings.worker_concurrency))
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=per_process, user_api="blas")  # for the life of the process
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(per_process)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # already initialised in this process; keep what it has


def serving(key: str | None = None) -> ServingModel:
    """The model this process runs, loaded once (`ModelCache`): the active one, or the
    model `key` names (a re-embedding backfill of a model not yet active)."""
    with engine().connect() as conn:
        if key is None:
            row = repository.active_model(conn)
            if row is None:
                raise RuntimeError(
                    "no active model: run `vitrine db upgrade` or `vitrine models activate`"
                )
        else:
            rows = [r for r in repository.list_models(conn) if r.key == key]
            if not rows:
                raise LookupError(f"unknown model {key!r}")
            row = rows[0]
    return ServingModel(row=row, model=_models.get(Path(row.path)))
