"""Least-privilege group roles and merchant row-level security.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28

Three NOLOGIN group roles, granted to login roles by operators (docs/roles.md):

- `vitrine_worker`: what `worker/` runs and nothing more. It records uploads, claims
  them, upserts predictions and embeddings, and marks images done or failed. It reads
  everything. It cannot DELETE, TRUNCATE, run DDL or write `models`: registering and
  activating models is the owner's job (`vitrine models add/activate`, `db upgrade`).
  UPDATE is granted per column, so a worker can move an image through its life cycle
  but can never re-assign it to another merchant or change its uri.
- `vitrine_analyst`: SELECT on every table and view and EXECUTE on every function;
  no writes.
- `vitrine_merchant`: SELECT only, and row-level security limits images, predictions
  and embeddings to the merchants in `vitrine_merchant_scope()`.

Enabling RLS hides every row from every non-owner role that has no policy, so the
worker and the analyst get explicit permissive policies. The owner (who runs
migrations and the operator commands) bypasses RLS; RLS is not FORCEd.

Grants are written out here, per object, and the next migration that adds an object
must grant it too (tests/integration/test_db_roles.py checks every relation). Only the
analyst also gets default privileges (SELECT on new tables, EXECUTE on new functions),
because "reads everything" is a blanket promise. A worker's writes and a merchant's
row filter are decisions to make per object; a default grant to the merchant would
leak a new table that has no policy yet.

On PostgreSQL < 15 a view cannot be `security_invoker`. It then reads its tables with
its owner's rights, which bypasses RLS, so merchants get no SELECT on `image_labels`
and `duplicate_candidates` there; they query the tables and functions instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WORKER, ANALYST, MERCHANT = "vitrine_worker", "vitrine_analyst", "vitrine_merchant"
ROLES = (WORKER, ANALYST, MERCHANT)
FUNCTIONS = (
    "similar_images(bigint, integer)",
    "similar_to_vector(vector, integer)",
    "vitrine_merchant_scope()",
)
TABLES = ("models", "images", "predictions", "embeddings", "merchant_logins", "alembic_version")
VIEWS = ("active_model", "image_labels", "duplicate_candidates")
# Views that show merchants' rows: readable by merchants only when security_invoker.
MERCHANT_VIEWS = ("image_labels", "duplicate_candidates")

# Creates whichever roles are missing. The migrating role then needs CREATEROLE;
# without it the whole revision rolls back with one line naming what a superuser runs.
# Another database's migration may create the same role at the same moment (roles are
# cluster-wide, the migration lock is per database): that is not an error.
CREATE_ROLES = f"""
DO $do$
DECLARE
    v_missing text[];
    v_role text;
BEGIN
    SELECT array_agg(r ORDER BY r) INTO v_missing
      FROM unnest(ARRAY['{WORKER}', '{ANALYST}', '{MERCHANT}']) AS r
     WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r);
    IF v_missing IS NULL THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles
                    WHERE rolname = current_user AND (rolsuper OR rolcreaterole)) THEN
        RAISE EXCEPTION 'vitrine db upgrade: role % may not create roles; as a superuser '
            'run: %  then run vitrine db upgrade again', current_user,
            (SELECT string_agg(format('CREATE ROLE %I NOLOGIN;', r), ' ')
               FROM unnest(v_missing) AS r)
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    FOREACH v_role IN ARRAY v_missing LOOP
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', v_role);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END LOOP;
END
$do$
"""

# Which merchants this session may see. SQL-standard body (PostgreSQL >= 14): parsed
# once, here, so a temporary table or a schema earlier on a session's search_path cannot
# stand in for `merchant_logins`. `session_user` is the login, which SET ROLE does not
# change. A login listed in merchant_logins is bound to its merchants (the GUC can only
# narrow that); any other login sees the merchant named by the GUC, or nothing.
MERCHANT_SCOPE = """
CREATE FUNCTION vitrine_merchant_scope() RETURNS text[]
LANGUAGE sql STABLE PARALLEL SAFE SECURITY INVOKER
RETURN CASE
    WHEN EXISTS (SELECT 1 FROM merchant_logins b WHERE b.login = session_user)
    THEN ARRAY(SELECT b.merchant_id FROM merchant_logins b
                WHERE b.login = session_user
                  AND b.merchant_id = coalesce(
                        nullif(current_setting('vitrine.merchant_id', true), ''), b.merchant_id)
                ORDER BY b.merchant_id)
    ELSE array_remove(ARRAY[nullif(current_setting('vitrine.merchant_id', true), '')], NULL)
END
"""

# `(SELECT scope())` is an InitPlan: evaluated once per statement, not per row, and
# `merchant_id = ANY(...)` can use the (merchant_id, created_at) index.
_IN_SCOPE = "merchant_id = ANY ((SELECT vitrine_merchant_scope())::text[])"
_IMAGE_IN_SCOPE = "EXISTS (SELECT 1 FROM images i WHERE i.id = {table}.image_id AND i.{scope})"
POLICIES = [
    ("images", "worker", f"FOR ALL TO {WORKER} USING (true) WITH CHECK (true)"),
    ("images", "analyst", f"FOR SELECT TO {ANALYST} USING (true)"),
    ("images", "merchant", f"FOR SELECT TO {MERCHANT} USING ({_IN_SCOPE})"),
    ("merchant_logins", "analyst", f"FOR SELECT TO {ANALYST} USING (true)"),
    ("merchant_logins", "merchant", f"FOR SELECT TO {MERCHANT} USING (login = session_user)"),
] + [
    (table, who, clause)
    for table in ("predictions", "embeddings")
    for who, clause in (
        ("worker", f"FOR ALL TO {WORKER} USING (true) WITH CHECK (true)"),
        ("analyst", f"FOR SELECT TO {ANALYST} USING (true)"),
        (
            "merchant",
            f"FOR SELECT TO {MERCHANT} USING "
            f"({_IMAGE_IN_SCOPE.format(table=table, scope=_IN_SCOPE)})",
        ),
    )
]
RLS_TABLES = ("images", "predictions", "embeddings", "merchant_logins")

_ALL_FUNCTIONS = ", ".join(FUNCTIONS)
GRANTS = [
    # worker: exactly the statements of db/repository/images.py and the reads.
    f"SELECT ON models, images, predictions, embeddings, alembic_version, "
    f"{', '.join(VIEWS)} TO {WORKER}",
    f"INSERT (merchant_id, uri, sku) ON images TO {WORKER}",
    f"UPDATE (sku, status, error, attempts, sha256, width, height, format, updated_at, "
    f"processed_at) ON images TO {WORKER}",
    f"INSERT ON predictions, embeddings TO {WORKER}",
    f"UPDATE (label, label_index, confidence, top_k, created_at) ON predictions TO {WORKER}",
    f"UPDATE (embedding, created_at) ON embeddings TO {WORKER}",
    f"USAGE ON SEQUENCE images_id_seq TO {WORKER}",
    f"EXECUTE ON FUNCTION similar_images(bigint, integer), similar_to_vector(vector, integer) "
    f"TO {WORKER}",
    # analyst: reads everything.
    f"SELECT ON {', '.join(TABLES)}, {', '.join(VIEWS)} TO {ANALYST}",
    f"EXECUTE ON FUNCTION {_ALL_FUNCTIONS} TO {ANALYST}",
    # merchant: reads, row-filtered; `models` because the functions read it.
    f"SELECT ON models, images, predictions, embeddings, merchant_logins, active_model "
    f"TO {MERCHANT}",
    f"EXECUTE ON FUNCTION {_ALL_FUNCTIONS} TO {MERCHANT}",
]

# Schema-wide statements need the schema's name, known only to the server.
_SCHEMA_DO = """
DO $do$
BEGIN
    EXECUTE format('{statement}', current_schema());
END
$do$
"""
_GROUPS = ", ".join(ROLES)
SCHEMA_GRANTS = [
    f"GRANT USAGE ON SCHEMA %I TO {_GROUPS}",
    f"ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT ON TABLES TO {ANALYST}",
    f"ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT EXECUTE ON FUNCTIONS TO {ANALYST}",
]
SCHEMA_REVOKES = [
    f"ALTER DEFAULT PRIVILEGES IN SCHEMA %I REVOKE EXECUTE ON FUNCTIONS FROM {ANALYST}",
    f"ALTER DEFAULT PRIVILEGES IN SCHEMA %I REVOKE SELECT ON TABLES FROM {ANALYST}",
    f"REVOKE USAGE ON SCHEMA %I FROM {_GROUPS}",
]

# security_invoker (PostgreSQL >= 15) makes a view apply the reader's privileges and RLS.
VIEW_OPTIONS = """
DO $do$
BEGIN
    IF current_setting('server_version_num')::int >= 150000 THEN
{statements}
    ELSE
        RAISE NOTICE 'PostgreSQL < 15: no security_invoker views; {notice}';
    END IF;
END
$do$
"""
_SET_INVOKER = [f"ALTER VIEW {v} SET (security_invoker = true)" for v in VIEWS] + [
    f"GRANT SELECT ON {', '.join(MERCHANT_VIEWS)} TO {MERCHANT}"
]
_RESET_INVOKER = [f"ALTER VIEW {v} RESET (security_invoker)" for v in VIEWS]

# Keep a role another database, a login or a default ACL still uses (pg_shdepend is
# cluster-wide). The migrating role's own membership does not count: PostgreSQL >= 16
# grants it to whoever creates a role without being superuser.
DROP_UNUSED_ROLES = f"""
DO $do$
DECLARE
    v_role text;
BEGIN
    FOREACH v_role IN ARRAY ARRAY['{MERCHANT}', '{ANALYST}', '{WORKER}'] LOOP
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_role);
        IF EXISTS (SELECT 1 FROM pg_shdepend d
                    WHERE d.refclassid = 'pg_authid'::regclass
                      AND d.refobjid = v_role::regrole)
           OR EXISTS (SELECT 1 FROM pg_auth_members m
                       WHERE m.roleid = v_role::regrole
                         AND m.member <> (SELECT oid FROM pg_roles
                                           WHERE rolname = current_user)) THEN
            RAISE NOTICE 'keeping role %: still granted or used elsewhere', v_role;
            CONTINUE;
        END IF;
        BEGIN
            EXECUTE format('DROP ROLE %I', v_role);
        EXCEPTION WHEN insufficient_privilege OR dependent_objects_still_exist THEN
            RAISE NOTICE 'keeping role %: %', v_role, SQLERRM;
        END;
    END LOOP;
END
$do$
"""


def _on_pg15(statements: Sequence[str], notice: str) -> str:
    body = "\n".join(f"        EXECUTE '{s}';" for s in statements)
    return VIEW_OPTIONS.replace("{statements}", body).replace("{notice}", notice)


def upgrade() -> None:
    op.execute(CREATE_ROLES)
    op.create_table(
        "merchant_logins",
        sa.Column("login", sa.Text, nullable=False),
        sa.Column("merchant_id", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("login", "merchant_id", name="merchant_logins_pkey"),
        comment="Binds a merchant login (session_user) to the merchants it may see.",
    )
    op.execute(MERCHANT_SCOPE)
    for statement in SCHEMA_GRANTS:
        op.execute(_SCHEMA_DO.replace("{statement}", statement))
    for grant in GRANTS:
        op.execute(f"GRANT {grant}")
    for table in RLS_TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    for table, who, clause in POLICIES:
        op.execute(f"CREATE POLICY {table}_{who} ON {table} {clause}")
    op.execute(
        _on_pg15(_SET_INVOKER, "vitrine_merchant may not read image_labels, duplicate_candidates")
    )
    op.execute(
        "COMMENT ON FUNCTION vitrine_merchant_scope() IS 'Merchants whose rows a "
        "vitrine_merchant session sees: its merchant_logins rows, else vitrine.merchant_id.'"
    )


def downgrade() -> None:
    for table, who, _ in reversed(POLICIES):
        op.execute(f"DROP POLICY IF EXISTS {table}_{who} ON {table}")
    for table in RLS_TABLES:
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    op.execute(_on_pg15(_RESET_INVOKER, "nothing to reset"))
    groups = ", ".join(ROLES)
    relations = ", ".join(t for t in TABLES if t != "merchant_logins")
    op.execute(f"REVOKE ALL ON {relations}, {', '.join(VIEWS)} FROM {groups}")
    op.execute(f"REVOKE ALL ON SEQUENCE images_id_seq FROM {groups}")
    op.execute(f"REVOKE ALL ON FUNCTION {', '.join(FUNCTIONS[:2])} FROM {groups}")
    for statement in SCHEMA_REVOKES:
        op.execute(_SCHEMA_DO.replace("{statement}", statement))
    op.execute("DROP FUNCTION IF EXISTS vitrine_merchant_scope()")
    op.drop_table("merchant_logins")  # its grants and policies go with it
    op.execute(DROP_UNUSED_ROLES)
