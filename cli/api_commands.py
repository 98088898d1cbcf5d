"""`serve` (the HTTP API) and `api-token create|list|revoke|rotate` (who may call it)."""

from __future__ import annotations

import os

import typer

from vitrine.cli.options import JSON
from vitrine.cli.output import emit_json, friendly, out_console, table
from vitrine.ops import api_clients
from vitrine.ops.context import open_context

tokens_app = typer.Typer(no_args_is_help=True, help="Bearer tokens for the HTTP API.")


def register(app: typer.Typer) -> None:
    app.add_typer(tokens_app, name="api-token")

    @app.command()
    @friendly
    def serve(
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
        port: int = typer.Option(8000, "--port", min=1, max=65535),
        workers: int = typer.Option(1, "--workers", min=1, help="uvicorn processes."),
    ) -> None:
        """Run the HTTP API (OpenAPI docs at /docs); servers checked first."""
        ctx = open_context()
        urls = ctx.urls()  # the database at this code's schema, the broker answering
        # uvicorn's processes open their own context: hand them the servers found here.
        os.environ["DATABASE_URL"], os.environ["REDIS_URL"] = urls.database_url, urls.redis_url
        from vitrine.api.server import serve as run_server

        out_console.print(f"vitrine API on http://{host}:{port} (OpenAPI docs: /docs)")
        run_server(host=host, port=port, workers=workers)

    @tokens_app.command("create")
    @friendly
    def create(
        name: str = typer.Option(..., "--name", help="Who the token is for, e.g. shop-frontend."),
        merchant: str = typer.Option(
            None, "--merchant", help="Act for this merchant only (default: any merchant)."
        ),
        json_out: bool = JSON,
    ) -> None:
        """Make a client and print its token (shown this once; only its hash is kept)."""
        _show(api_clients.create_token(open_context(), name=name, merchant_id=merchant), json_out)

    @tokens_app.command("list")
    @friendly
    def list_tokens(json_out: bool = JSON) -> None:
        """Clients and whether they are revoked (tokens themselves are not stored)."""
        clients = api_clients.list_tokens(open_context())
        if json_out:
            emit_json({"clients": clients})
            return
        rows = [
            [c.name, c.merchant_id or "(any)", f"{c.created_at:%Y-%m-%d %H:%M}", _state(c)]
            for c in clients
        ]
        out_console.print(table(["client", "merchant", "created", "state"], rows))

    @tokens_app.command("revoke")
    @friendly
    def revoke(name: str = typer.Argument(..., help="The client's name.")) -> None:
        """Revoke a client's token at once (its next request gets 401)."""
        api_clients.revoke_token(open_context(), name=name)
        out_console.print(f"revoked {name!r}")

    @tokens_app.command("rotate")
    @friendly
    def rotate(
        name: str = typer.Argument(..., help="The client's name."), json_out: bool = JSON
    ) -> None:
        """Replace a client's token in one step: the old one stops working (desk sessions
        included), a new one with the same merchant is printed once."""
        _show(api_clients.rotate_token(open_context(), name=name), json_out)


def _show(made: api_clients.NewToken, json_out: bool) -> None:
    merchant = made.client.merchant_id
    if json_out:
        emit_json({"name": made.client.name, "merchant_id": merchant, "token": made.token})
        return
    scope = f"merchant {merchant!r}" if merchant else "any merchant"
    out_console.print(f"client {made.client.name!r} ({scope}); its token, shown once:")
    out_console.print(made.token, soft_wrap=True)


def _state(client: api_clients.ApiClient) -> str:
    return "active" if client.revoked_at is None else f"revoked {client.revoked_at:%Y-%m-%d}"
