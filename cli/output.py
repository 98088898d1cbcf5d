"""Shared CLI plumbing: user mistakes become one clear line on stderr, never a traceback."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from embedded.common import ServiceError

F = TypeVar("F", bound=Callable[..., Any])

err_console = Console(stderr=True)
out_console = Console()


class CliError(Exception):
    """A problem the user can fix; the message says what was wrong and what to do."""


# Errors that describe the user's input or environment, not a bug in vitrine.
USER_ERRORS: tuple[type[BaseException], ...] = (
    CliError,
    ServiceError,
    FileNotFoundError,
    LookupError,
    ValueError,
    PermissionError,
)


def friendly(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            err_console.print(f"[bold red]error:[/] {message}", highlight=False)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("interrupted; work already queued stays queued")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def print_result(obj: Any, json_out: bool) -> None:
    """A command's result dict: JSON for machines, rich's pretty print for people."""
    if json_out:
        emit_json(obj)
    else:
        out_console.print(obj)
