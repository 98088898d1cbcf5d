"""Review-desk sessions kept on the server, and API client names free again once revoked.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05

- `desk_sessions`: one row per person logged in at the review desk. The browser's cookie
  holds a random session id, never the API token; only the id's SHA-256 is stored, with
  the client it acts as and when it expires. Logging out deletes the row; revoking or
  rotating the client's token ends its sessions too (the lookup joins a live client, and
  a rotated token is a new client row). Like `api_clients`, only the owner (the API's
  login) sees it: analysts lose their default SELECT, row-level security without a
  policy hides every row from anyone granted it later.
- `api_clients.name` was unique for ever, so a revoked client's name could not be used
  again. Now a name is unique among live clients only (a partial unique index), which
  is also what lets `vitrine api-token rotate` replace a token in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CREATE = """
CREATE TABLE desk_sessions (
    id_sha256 bytea PRIMARY KEY,
    client_id integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    CONSTRAINT desk_sessions_client_id_fkey FOREIGN KEY (client_id)
        REFERENCES api_clients (id) ON DELETE CASCADE,
    CONSTRAINT desk_sessions_id_sha256_check CHECK (octet_length(id_sha256) = 32)
)
"""

COMMENT = (
    "COMMENT ON TABLE desk_sessions IS 'Review-desk logins: the SHA-256 of the session id "
    "in the browser''s cookie, the API client it acts as, and when it expires.'"
)


def upgrade() -> None:
    op.execute(CREATE)
    op.execute("CREATE INDEX desk_sessions_client_id_idx ON desk_sessions (client_id)")
    op.execute("CREATE INDEX desk_sessions_expires_at_idx ON desk_sessions (expires_at)")
    op.execute(COMMENT)
    op.execute("REVOKE ALL ON desk_sessions FROM vitrine_analyst")
    op.execute("ALTER TABLE desk_sessions ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE api_clients DROP CONSTRAINT api_clients_name_key")
    op.execute(
        "CREATE UNIQUE INDEX api_clients_live_name_idx ON api_clients (name) "
        "WHERE revoked_at IS NULL"
    )


def downgrade() -> None:
    op.execute("DROP INDEX api_clients_live_name_idx")
    op.execute("ALTER TABLE api_clients ADD CONSTRAINT api_clients_name_key UNIQUE (name)")
    op.execute("DROP TABLE desk_sessions")
