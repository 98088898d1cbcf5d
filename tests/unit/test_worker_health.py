"""`vitrine worker-check`'s heartbeat verdicts."""

from __future__ import annotations

import os
import time
from pathlib import Path

from vitrine.ops.health import check_heartbeat, heartbeat_node
from vitrine.settings import Settings
from vitrine.worker.health import write_heartbeat


def test_fresh_stale_and_missing(tmp_path: Path) -> None:
    path = tmp_path / "worker.heartbeat"
    missing = check_heartbeat(path, max_age=60)
    assert not missing.ok and "no heartbeat file" in missing.message
    write_heartbeat(path, "vitrine-abc@host")
    fresh = check_heartbeat(path, max_age=60)
    assert fresh.ok, fresh.message
    old = time.time() - 120
    os.utime(path, (old, old))
    stale = check_heartbeat(path, max_age=60)
    assert not stale.ok and "120 s old" in stale.message and "\n" not in stale.message
    assert check_heartbeat(path, max_age=60, now=old + 30).ok
    assert heartbeat_node(path) == "vitrine-abc@host"
    path.write_text("garbage")
    assert heartbeat_node(path) is None


def test_default_heartbeat_is_under_the_data_dir(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).heartbeat_path == tmp_path / "worker.heartbeat"
    assert Settings(heartbeat_file=tmp_path / "hb").heartbeat_path == tmp_path / "hb"


def test_each_worker_gets_a_fresh_metrics_dir(tmp_path: Path) -> None:
    from vitrine.ops.workers import fresh_metrics_dir

    live, dead = os.getppid(), 2**22 + 12345  # above any pid_max: not running
    for pid in (live, dead, os.getpid()):
        (tmp_path / f"worker-{pid}").mkdir()
        (tmp_path / f"worker-{pid}" / "counter_1.db").write_bytes(b"old")
    path = fresh_metrics_dir(tmp_path, os.getpid())
    assert path == tmp_path / f"worker-{os.getpid()}" and not any(path.iterdir())
    assert (tmp_path / f"worker-{live}").exists()  # another running worker's stays
    assert not (tmp_path / f"worker-{dead}").exists()
