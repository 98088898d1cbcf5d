"""The `vitrine` command: each subcommand parses its arguments, calls `ops`, prints.

Exit codes: 0 every upload done, 1 some uploads failed, 2 a user mistake (bad path,
option, manifest, model directory, un-migrated database), 3 a server cannot be reached.
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version

import typer

from vitrine.cli import (
    api_commands,
    bench_commands,
    explain_commands,
    forget_commands,
    model_commands,
    query_commands,
    server_commands,
    upload_commands,
)
from vitrine.cli.output import emit_json
from vitrine.ops.logs import setup_cli_logging


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


def _usage_error(exc: typer.TyperException) -> None:
    """Click's message and exit code (2) for a bad option or argument; with --json, the
    same as one JSON object on stdout, as every other error."""
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    if hasattr(exc, "show"):
        exc.show()
    else:
        typer.echo(message, err=True)
    exit_code = int(getattr(exc, "exit_code", 2))
    if "--json" in sys.argv[1:]:
        emit_json({"error": message, "exit_code": exit_code})
    sys.exit(exit_code)


def main() -> None:
    # TensorFlow's start-up chatter is noise on a terminal (real errors still show); log
    # lines never carry credentials.
    setup_cli_logging()
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        sys.exit(1)
    except typer.TyperException as exc:  # a bad option or argument: Click's words, exit 2
        _usage_error(exc)
    sys.exit(code if isinstance(code, int) else 0)
