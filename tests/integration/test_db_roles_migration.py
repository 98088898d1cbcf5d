"""Migration 0002 as a step: roles made once per cluster, by whom, and taken back.

Group roles are cluster-wide, so the tests that need them absent drop them first, which
only a private server allows (`VITRINE_TEST_DATABASE_URL` unset).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import re
from collections.abc import Iterator

import pytest
import sqlalchemy.exc
from alembic import command
from sqlalchemy.engine import make_url

from tests.integration._pg import ENV_URL
from tests.integration._roles import (
    GROUPS,
    drop_roles,
    grants,
    group_roles,
    role_db,
    run,
    throwaway_server,
)
from vitrine.db import repository as repo
from vitrine.db.migrate import alembic_config, current_revision, head_revision, upgrade
from vitrine.pipeline.types import Upload

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pg_server() -> Iterator[str]:
    with throwaway_server() as url:
        yield url


@pytest.fixture()
def private_server(pg_server: str) -> str:
    """The module's server with no group roles yet (nothing else may use them)."""
    if os.environ.get(ENV_URL):
        pytest.skip("drops the cluster-wide group roles: needs the private test server")
    drop_roles(pg_server, GROUPS)
    return pg_server


def test_roles_are_created_once_for_many_databases(private_server: str) -> None:
    """Roles are cluster-wide: databases migrating at the same time share them."""
    with role_db(private_server, migrate=False) as a, role_db(private_server, migrate=False) as b:
        assert group_roles(a) == {}
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
            for future in [pool.submit(upgrade, d.url) for d in (a, b, a, b)]:
                future.result(timeout=180)
        upgrade(a.url)  # once more: nothing to do
        assert group_roles(a) == dict.fromkeys(GROUPS, False)
        assert current_revision(a.url) == current_revision(b.url) == head_revision()


def test_downgrade_keeps_roles_in_use_and_upgrade_again(private_server: str) -> None:
    with role_db(private_server) as a, role_db(private_server) as b:
        a.login("t_keep", "vitrine_analyst")
        downgrade = alembic_config(a.url)
        command.downgrade(downgrade, "0001")
        assert run(a.admin, "SELECT to_regclass('merchant_logins')") == [(None,)]
        assert run(a.admin, "SELECT count(*) FROM pg_policies") == [(0,)]
        assert run(a.admin, "SELECT bool_or(relrowsecurity) FROM pg_class") == [(False,)]
        assert all(grants(a, role) == set() for role in GROUPS)
        assert run(a.admin, "SELECT count(*) FROM pg_default_acl") == [(0,)]
        assert set(group_roles(a)) == set(GROUPS)  # b still grants to them

        command.downgrade(alembic_config(b.url), "0001")
        assert set(group_roles(a)) == {"vitrine_analyst"}  # t_keep is still its member
        a.forget_login("t_keep")
        upgrade(a.url)
        command.downgrade(downgrade, "0001")
        assert group_roles(a) == {}  # nothing uses them any more: dropped

        for d in (a, b):
            upgrade(d.url)
            assert current_revision(d.url) == head_revision()
        worker = a.login("t_worker", "vitrine_worker")
        assert run(worker, lambda c: repo.upsert_pending_images(c, uploads=[Upload("u", "m")]))


def test_owner_without_createrole_gets_the_statements_to_run(private_server: str) -> None:
    with role_db(private_server, migrate=False) as db:
        db.login("t_owner")  # LOGIN only: no CREATEROLE, no superuser
        name = make_url(db.url).database
        run(db.admin, f'ALTER DATABASE "{name}" OWNER TO t_owner')
        run(db.admin, "CREATE EXTENSION vector")  # untrusted: not the owner's to create
        # (0001's functions SET hnsw.iterative_scan, which a non-superuser may name only
        # once pgvector's library is loaded: `upgrade` loads it first.)
        with pytest.raises(sqlalchemy.exc.ProgrammingError) as info:
            upgrade(db.url_as("t_owner"))
        message = str(info.value.orig).splitlines()[0]
        assert "role t_owner may not create roles" in message, message
        assert current_revision(db.url) == "0001"  # 0002 rolled back as a whole

        statements = re.search(r"run: (.*?)  then", message)
        assert statements is not None, message
        assert statements.group(1).count("CREATE ROLE") == 3
        run(db.admin, statements.group(1))  # what the superuser is told to run
        upgrade(db.url_as("t_owner"))
        assert current_revision(db.url) == head_revision()
        with role_db(private_server) as reference:  # migrated by the superuser
            for role in GROUPS:
                assert grants(db, role) == grants(reference, role), role

        command.downgrade(alembic_config(db.url_as("t_owner")), "0001")
        assert set(group_roles(db)) == set(GROUPS)  # not t_owner's to drop: kept
