"""vitrine_merchant: row-level security by vitrine.merchant_id, or by merchant_logins.

Two merchants share the database; m-7's items are nearer to m-42's query image than
m-42's own are, so a search that leaked across merchants would show it at once.
Also runs every SQL block of docs/roles.md, as the login it names.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine

from tests.integration._roles import (
    MERCHANT_VIEWS,
    RoleDb,
    gallery,
    invoker_views,
    refused,
    register,
    result,
    role_db,
    run,
    throwaway_server,
)
from vitrine.db import repository as repo
from vitrine.pipeline.types import Upload

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[2] / "docs" / "roles.md"


@pytest.fixture(scope="module")
def pg_server() -> Iterator[str]:
    with throwaway_server() as url:
        yield url


@dataclass
class Shop:
    db: RoleDb
    ids: dict[str, list[int]]  # merchant -> image ids, in upload order
    q: int  # m-42's query image
    n1: int  # m-7's image nearest to q


@pytest.fixture()
def shop(pg_server: str) -> Iterator[Shop]:
    with role_db(pg_server) as db:
        with db.admin.begin() as conn:
            model_id = register(conn)
            # q, a, b, b2 (b2 ~ b: an embedding duplicate within m-42); a and d share a file.
            m42 = gallery(
                conn,
                model_id,
                "m-42",
                [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0.001]],
                shas=[None, "same-file", None, None],
            )
            # n1, n2: nearer to q than any m-42 image, and to each other; d: a's file.
            m7 = gallery(
                conn,
                model_id,
                "m-7",
                [[1, 0.01, 0, 0], [1, 0, 0.02, 0], [0, 1, 0, 0.001]],
                shas=[None, None, "same-file"],
            )
            uploads = [Upload("s3://m-42/new.png", "m-42")]
            (pending,) = repo.upsert_pending_images(conn, uploads=uploads)
        yield Shop(db=db, ids={"m-42": [*m42, pending], "m-7": m7}, q=m42[0], n1=m7[0])


Seen = dict[str, set[tuple[int, ...]]]


def seen(engine: Engine, merchant: str | None = None, views: bool = True) -> Seen:
    """Image ids one session sees in each table (and view) that holds merchants' rows.

    One id per row; `duplicate_candidates` gives (image_id, duplicate_id) pairs.
    """
    queries = {
        "images": "SELECT id FROM images",
        "predictions": "SELECT image_id FROM predictions",
        "embeddings": "SELECT image_id FROM embeddings",
        "image_labels": "SELECT image_id FROM image_labels",
        "duplicate_candidates": "SELECT image_id, duplicate_id FROM duplicate_candidates",
    }
    if not views:  # PostgreSQL 14: merchants may not read these views at all
        queries = {k: v for k, v in queries.items() if k not in MERCHANT_VIEWS}
    return {name: {tuple(r) for r in run(engine, sql, merchant)} for name, sql in queries.items()}


def test_merchant_sees_only_its_rows(shop: Shop) -> None:
    storefront = shop.db.login("t_storefront", "vitrine_merchant")
    views = invoker_views(shop.db.admin)
    everything = seen(shop.db.admin, views=views)
    assert {m for (m,) in run(shop.db.admin, "SELECT merchant_id FROM image_labels")} == {
        "m-42",
        "m-7",
    }
    for merchant, own in shop.ids.items():
        # Rows (and duplicate pairs) all of whose images are the merchant's, no others.
        expected = {k: {r for r in v if set(r) <= set(own)} for k, v in everything.items()}
        assert all(expected.values()), expected
        assert seen(storefront, merchant, views) == expected, merchant
    assert len(run(storefront, "SELECT * FROM active_model", "m-42")) == 1
    if not views:  # PostgreSQL 14: the views would run with their owner's rights
        for view in MERCHANT_VIEWS:
            refused(storefront, f"SELECT * FROM {view}", "m-42")
        return
    merchants = "SELECT DISTINCT merchant_id FROM image_labels"
    assert run(storefront, merchants, "m-42") == [("m-42",)]
    pairs = run(
        storefront,
        "SELECT merchant_id, duplicate_merchant_id, reason FROM duplicate_candidates",
        "m-42",
    )
    assert set(pairs) == {("m-42", "m-42", "phash")}  # b ~ b2; a ~ d is m-7's too
    admin_pairs = run(
        shop.db.admin, "SELECT merchant_id, duplicate_merchant_id FROM duplicate_candidates"
    )
    assert ("m-42", "m-7") in set(admin_pairs)  # the owner does see pairs across merchants


def test_similarity_never_crosses_merchants(shop: Shop) -> None:
    storefront = shop.db.login("t_storefront", "vitrine_merchant")
    nearest = f"SELECT image_id, merchant_id FROM similar_images({shop.q}, 10)"
    assert [m for _, m in run(shop.db.admin, nearest)][:2] == ["m-7", "m-7"]  # m-7 is nearer
    own = run(storefront, nearest, "m-42")
    assert {i for i, _ in own} == set(shop.ids["m-42"][1:4])
    assert {m for _, m in own} == {"m-42"}
    by_vector = "SELECT merchant_id FROM similar_to_vector('[1,0,0,0]', 10)"
    assert {m for (m,) in run(storefront, by_vector, "m-42")} == {"m-42"}
    assert run(storefront, f"SELECT * FROM similar_images({shop.n1}, 10)", "m-42") == []
    found = run(storefront, lambda c: repo.similar(c, image_id=shop.q, k=10), "m-42")
    assert {n.merchant_id for n in found} == {"m-42"} and len(found) == 3
    assert run(storefront, lambda c: repo.similar(c, image_id=shop.n1), "m-42") == []


def test_merchant_without_the_setting_sees_nothing(shop: Shop) -> None:
    storefront = shop.db.login("t_storefront", "vitrine_merchant")
    for merchant in (None, ""):  # never set, or reset to '' after a SET LOCAL ended
        views = invoker_views(shop.db.admin)
        nothing: Seen = {name: set() for name in seen(shop.db.admin, views=views)}
        assert seen(storefront, merchant, views) == nothing
        assert run(storefront, "SELECT vitrine_merchant_scope()", merchant) == [([],)]
        assert run(storefront, f"SELECT * FROM similar_images({shop.q})", merchant) == []
    assert len(run(storefront, "SELECT * FROM models")) == 1  # not merchants' data


def test_merchant_cannot_write(shop: Shop) -> None:
    storefront = shop.db.login("t_storefront", "vitrine_merchant")
    q = shop.q
    for statement in (
        "INSERT INTO images (merchant_id, uri) VALUES ('m-42', 'mine')",
        f"UPDATE images SET sku = 'x' WHERE id = {q}",
        f"DELETE FROM images WHERE id = {q}",
        f"DELETE FROM predictions WHERE image_id = {q}",
        "TRUNCATE embeddings",
        "INSERT INTO merchant_logins VALUES ('t_storefront', 'm-7')",
        "UPDATE models SET is_active = false",
        "CREATE TABLE scratch (x int)",
    ):
        refused(storefront, statement, "m-42")
    refused(storefront, lambda c: repo.upsert_pending_images(c, uploads=[Upload("u", "m-42")]))
    refused(storefront, lambda c: repo.mark_failed(c, image_id=q, error="x"), "m-42")
    refused(storefront, lambda c: repo.save_results(c, results=[result(q, 1, [1, 0, 0, 0])]))


def test_a_bound_login_cannot_see_another_merchant(shop: Shop) -> None:
    run(shop.db.admin, "INSERT INTO merchant_logins VALUES ('t_portal', 'm-42')")
    run(
        shop.db.admin,
        "INSERT INTO merchant_logins VALUES ('t_agency', 'm-42'), ('t_agency', 'm-7')",
    )
    portal = shop.db.login("t_portal", "vitrine_merchant")
    agency = shop.db.login("t_agency", "vitrine_merchant")
    m42, m7 = set(shop.ids["m-42"]), set(shop.ids["m-7"])
    images = "SELECT id FROM images"

    def ids(engine: Engine, sql: str | tuple[str, ...] = images, m: str | None = None) -> set[int]:
        return {r[0] for r in run(engine, sql, m)}

    assert ids(portal) == m42  # bound: no setting needed
    assert ids(portal, m="m-7") == set()  # the setting narrows, never widens
    as_group = ("SET LOCAL ROLE vitrine_merchant", images)
    assert ids(portal, as_group, "m-7") == set()  # SET ROLE does not change session_user
    spoof = (
        "CREATE TEMP TABLE merchant_logins (login text, merchant_id text)",
        "INSERT INTO merchant_logins VALUES (session_user, 'm-7')",
        images,
    )
    assert ids(portal, spoof) == m42  # the policy reads public.merchant_logins, always
    assert run(portal, "SELECT * FROM public.merchant_logins") == [("t_portal", "m-42")]
    assert ids(agency) == m42 | m7
    assert ids(agency, m="m-7") == m7

    storefront = shop.db.login("t_storefront", "vitrine_merchant")  # not bound: the setting
    assert ids(storefront, spoof, "m-42") == m42
    assert run(storefront, "SELECT * FROM public.merchant_logins", "m-42") == []


def test_roles_doc_runs_as_the_logins_it_names(shop: Shop) -> None:
    """Each ```sql block of docs/roles.md; `-- connected as NAME` runs it as that login."""
    if not invoker_views(shop.db.admin):
        pytest.skip("the page's merchant examples read image_labels (PostgreSQL >= 15)")
    blocks = re.findall(r"```sql\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 4
    for sql in blocks:
        for name in re.findall(r"CREATE ROLE (\w+) LOGIN", sql):
            shop.db.track_login(name)  # dropped when the test ends
        who = re.match(r"-- connected as (\w+)", sql)
        url = shop.db.url_as(who.group(1), "change-me") if who else shop.db.url
        url = url.replace("postgresql+psycopg://", "postgresql://", 1)
        with psycopg.connect(url, autocommit=True) as pg, pg.cursor() as cur:
            cur.execute(sql)
            rows = cur.fetchall() if cur.description else []
            while cur.nextset():
                rows = cur.fetchall() if cur.description else rows
        if "SELECT" in sql.upper():
            assert rows, sql
    assert run(shop.db.admin, "SELECT * FROM merchant_logins") == [("acme_portal", "m-42")]
