"""Logging of a `vitrine` command: set up before anything else runs."""

from __future__ import annotations

from vitrine.worker.logs import redact_handlers
from vitrine.worker.quiet import quiet_tensorflow


def setup_cli_logging() -> None:
    """No TensorFlow start-up noise (vitrine.worker.quiet); no credentials in whatever is logged."""
    quiet_tensorflow()
    redact_handlers()
