"""The `vitrine` command: each subcommand parses its arguments, calls `ops`, prints.

Exit codes: 0 every upload done, 1 some uploads failed, 2 a user mistake (bad path,
option, manifest, model directory, un-migrated database), 3 a server cannot be reached.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import typer

from cli import (
    api_commands,
    bench_commands,
    explain_commands,
    forget_commands,
    model_commands,
    query_commands,
    server_commands,
    upload_commands,
)
from ops.logs import setup_cli_logging


def _version() -> str:
    try:
        return version("vitrine")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"vitrine {_version()}")
        raise typer.Exit()


app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: flags read as flags (`--json`), not `<bool>`
    context_settings={"help_option_names": ["-h", "--help"]},
    help="vitrine: product images -> labels and vectors in PostgreSQL/pgvector.",
)


@app.callback()
def _root(
    show_version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """vitrine: product images -> labels and vectors in PostgreSQL/pgvector."""


for commands in (
    upload_commands,
    query_commands,
    explain_commands,
    model_commands,
    bench_commands,
    server_commands,
    api_commands,
    forget_commands,
):
    commands.register(app)


def main() -> None:
    # TensorFlow's start-up chatter is noise on a terminal (real errors still show); log
    # lines never carry credentials.
    setup_cli_logging()
    app()
