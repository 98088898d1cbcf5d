"""Who may connect to the embedded PostgreSQL, and how: a SCRAM password, never `trust`.

Clusters made by vitrine before it used passwords (initdb --auth=trust) are converted in
place the first time they are used, running or not, without losing a row: the superuser
gets the data directory's password, as a SCRAM verifier computed here so that the plain
password never travels to the server (nor into its log); then pg_hba.conf's `trust`
lines become `scram-sha-256` and the server reloads. A reload, not a restart, so open
connections and workers carry on. Every step can be repeated, so a run interrupted half
way is completed by the next one.
"""

from __future__ import annotations

import logging
import re
from functools import partial
from pathlib import Path

import psycopg
from psycopg import sql

from vitrine.embedded.common import HOST, ServiceError, wait_for
from vitrine.embedded.credentials import write_private

log = logging.getLogger(__name__)

PG_USER = "vitrine"  # database superuser created by initdb (not an OS user)
PG_DATABASE = "vitrine"
SCRAM = "scram-sha-256"
# A pg_hba.conf rule (not a comment) whose method, its last field, is trust.
_TRUST_RULE = re.compile(r"^(?![ \t]*#)([^\n]*\S[ \t]+)trust([ \t]*)$", re.MULTILINE)


def url(port: int, password: str | None) -> str:
    """The SQLAlchemy URL the rest of vitrine connects with (no password: a trust cluster
    nobody has converted yet, which lets it in all the same)."""
    auth = f"{PG_USER}:{password}" if password else PG_USER
    return f"postgresql+psycopg://{auth}@{HOST}:{port}/{PG_DATABASE}"


def connect(port: int, password: str | None, dbname: str = "postgres") -> psycopg.Connection:
    """An autocommit connection as the superuser, failing within seconds.

    Probes also knock on recorded ports that some other local process may hold by now;
    `require_auth` (libpq 16+) keeps libpq from handing that process the plain password,
    as it would if asked for `password` auth. `none` is for trust clusters of old."""
    guard = f"require_auth={SCRAM},none" if psycopg.pq.version() >= 160000 else ""
    return psycopg.connect(
        guard,
        host=HOST,
        port=port,
        user=PG_USER,
        dbname=dbname,
        password=password,
        connect_timeout=5,
        autocommit=True,
    )


def refuses_password(exc: psycopg.Error) -> bool:
    """Whether a failed connect was PostgreSQL turning the password down (or its absence)."""
    text = str(exc)
    return "password authentication failed" in text or "no password supplied" in text


def without_trust(hba: str) -> str:
    """pg_hba.conf text with every `trust` rule asking for a SCRAM password instead."""
    return _TRUST_RULE.sub(rf"\g<1>{SCRAM}\g<2>", hba)


def uses_trust(data: Path) -> bool:
    """Whether the cluster in `data` lets anyone in without a password (older vitrine)."""
    try:
        return bool(_TRUST_RULE.search((data / "pg_hba.conf").read_text()))
    except FileNotFoundError:
        return False


def has_password(data: Path) -> bool:
    """Whether `data` holds a cluster that only its password opens."""
    return (data / "PG_VERSION").exists() and not uses_trust(data)


def secure(data: Path, port: int, password: str) -> None:
    """Convert the running cluster in `data` (on `port`) from trust to SCRAM; a no-op for
    clusters that have no trust rule, which is all of them but those of older vitrine."""
    hba = data / "pg_hba.conf"
    text = hba.read_text()
    if not _TRUST_RULE.search(text):
        return
    log.warning("%s: switching from trust to password (SCRAM) authentication", data)
    try:
        with connect(port, password) as conn:
            verifier = conn.pgconn.encrypt_password(
                password.encode(), PG_USER.encode(), SCRAM.encode()
            )
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(PG_USER), sql.Literal(verifier.decode())
                )
            )
            owner = hba.stat()
            write_private(hba, without_trust(text), owner=(owner.st_uid, owner.st_gid))
            conn.execute("SELECT pg_reload_conf()")
    except psycopg.Error as exc:
        raise ServiceError(
            f"could not switch PostgreSQL on {HOST}:{port} to password authentication: {exc}"
        ) from exc
    # The postmaster rereads pg_hba.conf on the signal, moments later; a file it cannot
    # parse keeps the old rules. Either way, only a refused wrong password proves it.
    if wait_for(partial(_refuses_wrong_password, port, password), timeout=15) is None:
        raise ServiceError(
            f"PostgreSQL on {HOST}:{port} still lets anyone in after {hba} was rewritten; "
            f"stop the servers (`vitrine services stop`) and check that file"
        )


def _refuses_wrong_password(port: int, password: str) -> bool | None:
    try:
        with connect(port, "not-" + password):
            return None
    except psycopg.Error as exc:
        return True if refuses_password(exc) else None
