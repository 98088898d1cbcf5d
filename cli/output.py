"""How the `vitrine` command talks: results on stdout, everything else on stderr.

`--json` prints exactly one JSON object on stdout; tables and progress bars are for
people. Failures are one line on stderr and a documented exit code (README "Exit codes"):
0 every upload done, 1 some failed, 2 a user mistake, 3 a server cannot be reached.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

import psycopg
import pydantic
import sqlalchemy.exc
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from vitrine.ops.errors import OpsError, ServerUnreachable
from vitrine.ops.progress import Tick

P = ParamSpec("P")
R = TypeVar("R")

err_console = Console(stderr=True, highlight=False, soft_wrap=True)  # a message is one line
out_console = Console(highlight=False)

EXIT_FAILED, EXIT_USER, EXIT_UNREACHABLE = 1, 2, 3


def _server_errors() -> tuple[type[BaseException], ...]:
    """Driver errors that mean "a server went away", for those raised mid-command."""
    import kombu.exceptions
    import redis.exceptions
    import sqlalchemy.exc

    return (
        sqlalchemy.exc.OperationalError,
        redis.exceptions.ConnectionError,
        kombu.exceptions.OperationalError,
    )


def fail(message: str, code: int, *, as_json: bool = False) -> typer.Exit:
    """One line on stderr; with --json also `{"error", "exit_code"}` on stdout, so a
    program reading the JSON learns what went wrong from the same stream."""
    err_console.print(f"[bold red]error:[/] {message}", markup=True)
    if as_json:
        emit_json({"error": message, "exit_code": code})
    return typer.Exit(code)


def friendly(fn: Callable[P, R]) -> Callable[P, R]:
    """Run a command; its errors become one line on stderr (and one JSON object on
    stdout with --json) and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        as_json = bool(kwargs.get("json_out"))
        try:
            return fn(*args, **kwargs)
        except OpsError as exc:
            raise fail(str(exc), exc.exit_code, as_json=as_json) from None
        except pydantic.ValidationError as exc:
            error = exc.errors()[0]
            name = "VITRINE_" + str(error["loc"][0]).upper() if error["loc"] else "a setting"
            message = error["msg"].removeprefix("Value error, ")
            raise fail(f"{name}: {message}", EXIT_USER, as_json=as_json) from None
        except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
            raise fail(str(exc), EXIT_USER, as_json=as_json) from None
        except KeyboardInterrupt:
            err_console.print("interrupted; work already queued stays queued")
            raise typer.Exit(130) from None
        except sqlalchemy.exc.ProgrammingError as exc:
            if not isinstance(exc.orig, psycopg.errors.InsufficientPrivilege):
                raise
            first = str(exc.orig).strip().splitlines()[0]
            message = f"the database refused: {first}; this command needs a role that may write"
            raise fail(message, EXIT_USER, as_json=as_json) from None
        except _server_errors() as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            unreachable = ServerUnreachable(f"lost a server mid-command: {first}")
            raise fail(str(unreachable), EXIT_UNREACHABLE, as_json=as_json) from None

    return wrapper


def emit_json(obj: Any) -> None:
    """One JSON object on stdout (dataclasses and paths included)."""

    def default(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return dataclasses.asdict(value)
        return str(value)

    sys.stdout.write(json.dumps(obj, indent=2, default=default) + "\n")
    sys.stdout.flush()


def table(
    columns: Sequence[str], rows: Sequence[Sequence[object]], title: str | None = None
) -> Table:
    grid = Table(title=title, title_justify="left")
    for column in columns:
        grid.add_column(column, overflow="fold")  # wrap long URIs, never cut them
    for row in rows:
        grid.add_row(*("" if v is None else str(v) for v in row))
    return grid


def key_values(data: dict[str, Any], title: str | None = None) -> Table:
    """A flat result (counts, rates) as a two-column table."""
    grid = Table(show_header=False, title=title, title_justify="left")
    for key, value in data.items():
        grid.add_row(key, "" if value is None else str(value))
    return grid


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:.0f} img/s" if task.speed else "")


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Tick]:
    """A bar on stderr for long work (`vitrine.ops.progress.ProgressFactory`)."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda advance: progress.advance(task, advance)
