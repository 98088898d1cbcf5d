"""API clients: who may call `vitrine serve`, by bearer token, stored only as a hash.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28

- `api_clients`: one row per client (a platform service, a merchant's integration). The
  token itself is shown once when it is made (`vitrine api-token create`) and only its
  SHA-256 is kept: tokens are 256 random bits, so a fast hash is as strong as a slow one
  and lets every request be checked by one index lookup.
- `merchant_id` NULL: a platform client, which may act for any merchant. Otherwise the
  API answers that client's requests as `vitrine_merchant` with `vitrine.merchant_id`
  set (row-level security of 0002), so it sees that merchant's rows only.
- Nobody but the owner reads the table: the analyst's default SELECT on new tables is
  revoked here (a token hash is not for analysts), no group gets anything, and row-level
  security without a policy hides every row from anyone else who is granted it later.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CREATE = """
CREATE TABLE api_clients (
    id serial PRIMARY KEY,
    name text NOT NULL CONSTRAINT api_clients_name_key UNIQUE,
    token_sha256 bytea NOT NULL CONSTRAINT api_clients_token_sha256_key UNIQUE,
    merchant_id text,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    CONSTRAINT api_clients_token_sha256_check CHECK (octet_length(token_sha256) = 32),
    CONSTRAINT api_clients_name_check CHECK (name <> '')
)
"""

COMMENT = (
    "COMMENT ON TABLE api_clients IS 'Bearer-token clients of the HTTP API; only the "
    "SHA-256 of each token is stored. merchant_id NULL: a platform client (any merchant).'"
)


def upgrade() -> None:
    op.execute(CREATE)
    op.execute(COMMENT)
    op.execute("REVOKE ALL ON api_clients, api_clients_id_seq FROM vitrine_analyst")
    # No policy: a role that is not the owner sees no row even if granted one later.
    op.execute("ALTER TABLE api_clients ENABLE ROW LEVEL SECURITY")


def downgrade() -> None:
    op.execute("DROP TABLE api_clients")
