"""Options several commands share, declared once so they read and behave the same."""

from __future__ import annotations

import typer

from vitrine.worker.names import ALL_QUEUES

JSON = typer.Option(False, "--json", help="Print one JSON object on stdout.")
WORKERS = typer.Option(
    1, "--workers", min=0, help="Local worker processes to start (0: use running workers)."
)
BATCH_SIZE = typer.Option(None, "--batch-size", min=1, help="Images per task (one forward pass).")
QUEUES = typer.Option(",".join(ALL_QUEUES), "--queues", help="Queues to consume, comma-separated.")


def parse_positive_ints(value: str, option: str) -> tuple[int, ...]:
    """ "40,100,200" -> (40, 100, 200); anything else is a usage error naming `option`."""
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if not all(p.isdigit() and int(p) > 0 for p in parts):
        raise typer.BadParameter(
            f"expected positive whole numbers separated by commas, got {value!r}", param_hint=option
        )
    return tuple(int(p) for p in parts)
