"""vitrine.worker.runtime: how many CPUs a worker process may really use, and its thread split.

The cgroup files are fakes under tmp_path laid out as the kernel shows them:
/proc/self/cgroup, /proc/self/mountinfo and the cgroup file systems they point to.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from vitrine.worker import runtime
from vitrine.worker.runtime import available_cpus

EIGHT = set(range(8))
V2_MOUNT = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate"
V1_MOUNTS = (
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
    "34 31 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory"
)


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def cgroup_v2(root: Path, cgroup: str, limits: dict[str, str], mount: str = V2_MOUNT) -> Path:
    """Process in `cgroup` of a v2 hierarchy; `limits` maps cgroup dirs to cpu.max text."""
    write(root, "proc/self/cgroup", f"0::{cgroup}")
    write(root, "proc/self/mountinfo", "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n" + mount)
    for directory, text in limits.items():
        write(root, f"sys/fs/cgroup{directory}/cpu.max", text)
    return root


def test_no_cgroup_files_leave_the_affinity(tmp_path: Path) -> None:
    assert available_cpus(tmp_path, affinity=EIGHT) == 8
    assert available_cpus(tmp_path, affinity={3}) == 1


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [
        ("max 100000", 8),  # no quota
        ("400000 100000", 4),
        ("150000 100000", 1),  # 1.5 CPUs: rounded down, 2 threads would be throttled
        ("50000 100000", 1),  # half a CPU: still one thread
        ("1600000 100000", 8),  # quota above the affinity: the affinity
    ],
)
def test_cgroup_v2_quota(tmp_path: Path, cpu_max: str, expected: int) -> None:
    root = cgroup_v2(tmp_path, "/worker.slice/vitrine", {"/worker.slice/vitrine": cpu_max})
    assert available_cpus(root, affinity=EIGHT) == expected


def test_cgroup_v2_tightest_ancestor_wins(tmp_path: Path) -> None:
    limits = {
        "/kubepods": "max 100000",
        "/kubepods/pod1": "200000 100000",
        "/kubepods/pod1/ctr": "max 100000",
    }
    root = cgroup_v2(tmp_path, "/kubepods/pod1/ctr", limits)
    assert available_cpus(root, affinity=EIGHT) == 2


def test_cgroup_v2_namespaced_container_sees_itself_as_the_root(tmp_path: Path) -> None:
    """With a cgroup namespace /proc/self/cgroup says "0::/" and the container's own
    cpu.max is at the top of the mount."""
    root = cgroup_v2(tmp_path, "/", {"": "300000 100000"})
    assert available_cpus(root, affinity=EIGHT) == 3


def test_cgroup_v2_bind_mounted_subtree(tmp_path: Path) -> None:
    """Without a namespace the path is the host's; the mount's root says which part of it
    the container sees."""
    mount = "30 23 0:26 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw"
    root = cgroup_v2(tmp_path, "/docker/abc", {"": "200000 100000"}, mount=mount)
    assert available_cpus(root, affinity=EIGHT) == 2


@pytest.mark.parametrize(("quota", "expected"), [("-1", 8), ("300000", 3), ("50000", 1)])
def test_cgroup_v1_cfs_quota(tmp_path: Path, quota: str, expected: int) -> None:
    write(tmp_path, "proc/self/cgroup", "4:memory:/ctr\n3:cpu,cpuacct:/ctr\n0::/")
    write(tmp_path, "proc/self/mountinfo", V1_MOUNTS)
    write(tmp_path, "sys/fs/cgroup/cpu,cpuacct/ctr/cpu.cfs_quota_us", quota)
    write(tmp_path, "sys/fs/cgroup/cpu,cpuacct/ctr/cpu.cfs_period_us", "100000")
    assert available_cpus(tmp_path, affinity=EIGHT) == expected


@pytest.mark.parametrize("cpu_max", ["", "garbage", "100000 0", "max"])
def test_unreadable_quota_is_no_quota(tmp_path: Path, cpu_max: str) -> None:
    root = cgroup_v2(tmp_path, "/a", {"/a": cpu_max})
    assert available_cpus(root, affinity=EIGHT) == 8


def test_this_process() -> None:
    """The real files: never more than the CPUs the process may be scheduled on."""
    import os

    assert 1 <= available_cpus() <= len(os.sched_getaffinity(0))


@pytest.mark.parametrize(("cpus", "concurrency", "intra"), [(8, 2, 4), (2, 2, 1), (1, 4, 1)])
def test_configure_threads_splits_the_available_cpus(
    monkeypatch: pytest.MonkeyPatch, cpus: int, concurrency: int, intra: int
) -> None:
    import tensorflow as tf

    calls: dict[str, Any] = {}
    monkeypatch.setattr(runtime, "available_cpus", lambda: cpus)
    monkeypatch.setattr(
        runtime, "get_settings", lambda: SimpleNamespace(worker_concurrency=concurrency)
    )
    threading = tf.config.threading
    monkeypatch.setattr(
        threading, "set_intra_op_parallelism_threads", lambda n: calls.update(intra=n)
    )
    monkeypatch.setattr(
        threading, "set_inter_op_parallelism_threads", lambda n: calls.update(inter=n)
    )
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads() -> list[int]:
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before = blas_threads()
    assert before, "numpy's BLAS not found by threadpoolctl"
    try:
        runtime.configure_threads()
        assert blas_threads() == [intra] * len(before)  # numpy's BLAS threads, too
    finally:
        threadpool_limits(limits=max(before), user_api="blas")
    assert calls == {"intra": intra, "inter": 1}


@pytest.mark.parametrize(("shown", "written"), [("0", "10"), ("-3", "10"), ("15", None)])
def test_yield_cpu_raises_the_session_nice_never_lowers_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, shown: str, written: str | None
) -> None:
    niced: list[int] = []
    monkeypatch.setattr(runtime.os, "nice", niced.append)
    monkeypatch.setattr(runtime.os, "getsid", lambda _: runtime.os.getpid())  # its own
    autogroup = tmp_path / "autogroup"
    autogroup.write_text(f"/autogroup-85 nice {shown}\n")
    runtime.yield_cpu(10, autogroup)
    assert niced == [10]
    assert autogroup.read_text().strip() == (written or f"/autogroup-85 nice {shown}")


def test_yield_cpu_without_autogroup_is_plain_nice(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    niced: list[int] = []
    monkeypatch.setattr(runtime.os, "nice", niced.append)
    runtime.yield_cpu(7, tmp_path / "absent")
    assert niced == [7]


@pytest.mark.skipif(not runtime.AUTOGROUP.exists(), reason="this kernel has no autogroup")
def test_yield_cpu_on_the_real_kernel_nices_its_own_session() -> None:
    """A process in a session of its own (as a launched worker is) ends with its session's
    autogroup at the nice it asked for: what ranks it against the live worker's session."""
    import subprocess
    import sys

    code = (
        "from vitrine.worker import runtime; runtime.yield_cpu(6); "
        "print(open('/proc/self/autogroup').read().split()[-1])"
    )
    shown = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, start_new_session=True
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == "6"


@pytest.mark.skipif(not runtime.AUTOGROUP.exists(), reason="this kernel has no autogroup")
def test_yield_cpu_leaves_a_shared_session_alone() -> None:
    """A worker started from a person's shell shares the shell's session: its pool
    process leaves the session's nice as it was (the plain nice ranks the processes
    inside it). Three processes as on such a host: the shell (leading a new session),
    the worker it started, and the worker's pool process."""
    import subprocess
    import sys

    pool = (
        "import os; from vitrine.worker import runtime; "
        "before = open('/proc/self/autogroup').read(); runtime.yield_cpu(6); "
        "print(before == open('/proc/self/autogroup').read(), os.nice(0))"
    )
    run = "import subprocess, sys; sys.exit(subprocess.run([sys.executable, '-c', {}]).returncode)"
    shell = run.format(repr(run.format(repr(pool))))
    shown = subprocess.run(
        [sys.executable, "-c", shell], capture_output=True, text=True, start_new_session=True
    )
    assert shown.returncode == 0, shown.stderr
    unchanged, nice = shown.stdout.split()
    assert unchanged == "True" and int(nice) >= 6
