"""Who runs PostgreSQL: as root, an unprivileged system account that owns the data.

PostgreSQL refuses to run as root. When vitrine runs as root (containers, CI), initdb and
pg_ctl run as the system user `vitrine` (created on demand, `nobody` as a last resort),
which owns `pg/` and is given search (not read) permission on the directories above it.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from embedded.common import ServiceError, child_env

log = logging.getLogger(__name__)

OS_ACCOUNT = "vitrine"  # OS user that runs the server when we are root


@dataclass(frozen=True)
class Account:
    uid: int
    gid: int


def run_as(
    args: list[str], account: Account | None, *, cwd: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL tool, as `account` (dropping root's groups) when given."""
    try:
        return subprocess.run(
            args,
            cwd=cwd,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            umask=0o077,
            user=account.uid if account else None,
            group=account.gid if account else None,
            extra_groups=[] if account else None,
        )
    except subprocess.TimeoutExpired as exc:
        raise ServiceError(f"{Path(args[0]).name} timed out after {timeout:.0f}s") from exc


def prepare_account(root: Path, binaries: Path) -> Account | None:
    """As root: pick the service account, let it reach `root` and the binaries, own `root`."""
    if os.geteuid() != 0:
        return None
    account = system_account()
    grant_traverse(root.parent, account)
    grant_traverse(binaries, account)
    if root.stat().st_uid != account.uid:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
                os.chown(name, account.uid, account.gid, follow_symlinks=False)
    return account


def system_account() -> Account:
    try:
        entry = pwd.getpwnam(OS_ACCOUNT)
    except KeyError:
        useradd = shutil.which("useradd")
        nologin = shutil.which("nologin") or "/bin/false"
        if useradd:
            subprocess.run(
                [useradd, "--system", "--user-group", "--no-create-home"]
                + ["--home-dir", "/nonexistent", "--shell", nologin, OS_ACCOUNT],
                capture_output=True,
                check=False,
            )
        try:
            entry = pwd.getpwnam(OS_ACCOUNT)
        except KeyError:
            try:
                entry = pwd.getpwnam("nobody")
            except KeyError as exc:
                raise ServiceError(
                    f"running as root, PostgreSQL needs an unprivileged user: create "
                    f"'{OS_ACCOUNT}' (useradd --system {OS_ACCOUNT})"
                ) from exc
    return Account(entry.pw_uid, entry.pw_gid)


def grant_traverse(path: Path, account: Account) -> None:
    """Add o+x (search, not read) to every directory on the way to `path` that `account`
    cannot pass, e.g. /root or pytest's 0700 temp root. Logged, since it loosens modes."""
    for directory in (path, *path.parents):
        st = directory.stat()
        if st.st_uid == account.uid:
            needed = stat.S_IXUSR
        elif st.st_gid == account.gid:
            needed = stat.S_IXGRP
        else:
            needed = stat.S_IXOTH
        if not st.st_mode & needed:
            directory.chmod(stat.S_IMODE(st.st_mode) | needed)
            log.warning(
                "chmod +x %s so the PostgreSQL account (uid %s) can reach its data",
                directory,
                account.uid,
            )
