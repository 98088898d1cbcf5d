"""Helpers for the role tests: a fresh database per test, login roles, refusals, data.

Group roles are cluster-wide and these tests create and drop login roles, so each test
module runs its own throw-away server (`_pg.start_test_postgres`) and every database and
login made here is dropped when the test ends.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import psycopg
import pytest
import sqlalchemy.exc
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import make_url

from tests.integration._pg import create_database, drop_database, start_test_postgres
from vitrine.db import repository as repo
from vitrine.db.engine import make_engine
from vitrine.db.migrate import upgrade
from vitrine.db.types import ImageResult
from vitrine.pipeline.types import FASHION_MNIST_LABELS, ImageInfo, ModelSpec, Prediction, Upload

GROUPS = ("vitrine_worker", "vitrine_analyst", "vitrine_merchant")
PASSWORD = "s3cret-for-tests"
DIM = 4


class RoleDb:
    """One database on the test server, its owner's engine and the logins made for it."""

    def __init__(self, server_url: str, *, migrate: bool = True) -> None:
        self.server_url = server_url
        self.url = create_database(server_url)
        if migrate:
            upgrade(self.url)
        self.admin = make_engine(self.url)
        self._engines: list[Engine] = [self.admin]
        self._logins: list[str] = []

    def login(self, name: str, *groups: str) -> Engine:
        """CREATE ROLE name LOGIN, GRANT it `groups`; an engine connected as it."""
        with self.admin.begin() as conn:
            conn.execute(text(f"CREATE ROLE {name} LOGIN PASSWORD '{PASSWORD}'"))
            for group in groups:
                conn.execute(text(f"GRANT {group} TO {name}"))
        self._logins.append(name)
        return self.engine_as(name)

    def url_as(self, name: str, password: str = PASSWORD) -> str:
        """This database's URL with another login's name and password."""
        url = make_url(self.url).set(username=name, password=password)
        return url.render_as_string(hide_password=False)

    def engine_as(self, name: str, password: str = PASSWORD) -> Engine:
        engine = make_engine(self.url_as(name, password))
        self._engines.append(engine)
        return engine

    def forget_login(self, name: str) -> None:
        """Drop a login now (it no longer holds its groups) instead of at the end."""
        drop_roles(self.server_url, [name])
        self._logins.remove(name)

    def track_login(self, name: str) -> None:
        """Drop `name` with the database (a login made by other means than `login`)."""
        self._logins.append(name)

    def close(self) -> None:
        for engine in self._engines:
            engine.dispose()
        name = make_url(self.url).database
        assert name is not None
        drop_database(self.server_url, name)
        drop_roles(self.server_url, self._logins)


def drop_roles(server_url: str, names: Sequence[str]) -> None:
    """Drop roles (logins or groups) that nothing uses any more."""
    if not names:
        return
    admin = make_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"DROP ROLE IF EXISTS {', '.join(names)}"))
    finally:
        admin.dispose()


@contextmanager
def role_db(server_url: str, *, migrate: bool = True) -> Iterator[RoleDb]:
    db = RoleDb(server_url, migrate=migrate)
    try:
        yield db
    finally:
        db.close()


Action = str | tuple[str, ...] | Callable[[Connection], Any]


def run(engine: Engine, action: Action, merchant: str | None = None) -> Any:
    """Run SQL (one statement, or a tuple of them) or a repository call, in one transaction.

    Returns the rows of the last statement (None if it returns none) or the call's result.
    `merchant` sets vitrine.merchant_id for that transaction only (SET LOCAL).
    """
    with engine.begin() as conn:
        if merchant is not None:
            conn.execute(
                text("SELECT set_config('vitrine.merchant_id', :m, true)"), {"m": merchant}
            )
        if callable(action):
            return action(conn)
        rows = None
        for statement in (action,) if isinstance(action, str) else action:
            result = conn.execute(text(statement))
            rows = result.all() if result.returns_rows else None
        return rows


def refused(engine: Engine, action: Action, merchant: str | None = None) -> str:
    """Assert PostgreSQL refuses `action` for lack of privilege; return its message."""
    with pytest.raises(sqlalchemy.exc.DBAPIError) as info:
        run(engine, action, merchant)
    assert isinstance(info.value.orig, psycopg.errors.InsufficientPrivilege), info.value
    return str(info.value.orig)


def invoker_views(engine: Engine) -> bool:
    """Whether views can be security_invoker (PostgreSQL >= 15; see docs/roles.md)."""
    version = run(engine, "SELECT current_setting('server_version_num')::int")[0][0]
    return bool(version >= 150000)


MERCHANT_VIEWS = ("image_labels", "duplicate_candidates")


def register(conn: Connection, version: str = "1") -> int:
    """Register (and, if none is, activate) a DIM-sized model; the owner's job."""
    spec = ModelSpec("fashion-cnn", version, FASHION_MNIST_LABELS, DIM)
    return repo.register_model(conn, spec=spec, path=f"/m/{version}")


def result(image_id: int, model_id: int, vec: Sequence[float], sha: str | None = None) -> Any:
    """A stored result; photos whose vectors point the same way get the same hash."""
    label = FASHION_MNIST_LABELS[image_id % 10]
    strongest = int(np.argmax(vec))
    phash = "".join("1" if j // 80 == strongest else "0" for j in range(320))
    return ImageResult(
        image_id=image_id,
        model_id=model_id,
        info=ImageInfo(
            sha256=sha or f"sha-{image_id}", width=28, height=28, format="PNG", phash=phash
        ),
        prediction=Prediction(
            label=label,
            label_index=image_id % 10,
            confidence=0.9,
            top_k=((label, 0.9),),
            embedding=np.asarray(vec, dtype=np.float32),
        ),
    )


def gallery(
    conn: Connection,
    model_id: int,
    merchant: str,
    vectors: Sequence[Sequence[float]],
    shas: Sequence[str | None] | None = None,
) -> list[int]:
    """Upload, claim and save one image per vector for `merchant`; return the ids."""
    uploads = [
        Upload(uri=f"s3://{merchant}/{n}.png", merchant_id=merchant) for n in range(len(vectors))
    ]
    ids = repo.upsert_pending_images(conn, uploads=uploads)
    for image_id in ids:
        repo.claim_images(conn, image_ids=[image_id]).get(image_id)
    shas = shas or [None] * len(ids)
    repo.save_results(
        conn,
        results=[result(i, model_id, v, s) for i, v, s in zip(ids, vectors, shas, strict=True)],
    )
    return ids


@contextmanager
def throwaway_server() -> Iterator[str]:
    """A private PostgreSQL + pgvector server for one test module; its URL."""
    # Not under pytest's tmp_path: a concurrent pytest session of the same user prunes
    # old /tmp/pytest-of-<user>/pytest-N dirs and would delete a running server's data.
    tmp_dir = tempfile.mkdtemp(prefix="vitrine-test-pg-")
    url, stop = start_test_postgres(tmp_dir)
    try:
        yield url
    finally:
        stop()
        shutil.rmtree(tmp_dir, ignore_errors=True)


def group_roles(db: RoleDb) -> dict[str, bool]:
    """{group role: can log in} for the group roles that exist."""
    rows = run(db.admin, "SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname LIKE 'vitrine_%'")
    return {name: login for name, login in rows if name in GROUPS}


def grants(db: RoleDb, role: str) -> set[str]:
    """Every privilege `role` holds in this database, as 'object:privilege[(column)]'."""
    rows = run(
        db.admin,
        f"""
        SELECT c.relname || ':' || a.privilege_type
          FROM pg_class c, aclexplode(c.relacl) a
         WHERE c.relnamespace = current_schema()::regnamespace AND a.grantee = '{role}'::regrole
        UNION ALL
        SELECT c.relname || ':' || a.privilege_type || '(' || att.attname || ')'
          FROM pg_attribute att JOIN pg_class c ON c.oid = att.attrelid,
               aclexplode(att.attacl) a
         WHERE c.relnamespace = current_schema()::regnamespace AND a.grantee = '{role}'::regrole
        UNION ALL
        SELECT p.proname || ':' || a.privilege_type
          FROM pg_proc p, aclexplode(p.proacl) a
         WHERE p.pronamespace = current_schema()::regnamespace AND a.grantee = '{role}'::regrole
        UNION ALL
        SELECT 'schema:' || a.privilege_type
          FROM pg_namespace n, aclexplode(n.nspacl) a
         WHERE n.oid = current_schema()::regnamespace AND a.grantee = '{role}'::regrole
        """,
    )
    return {r[0] for r in rows}
