"""What can go wrong in a command, sorted by who can fix it.

Orchestration raises these; the CLI turns each into one line on stderr and an exit code
(the exit codes are part of the CLI's contract, see README "Exit codes"). Messages are
for people: what was wrong, then what to do.
"""

from __future__ import annotations


class OpsError(Exception):
    """Base class; never raised itself."""

    exit_code = 1


class UserError(OpsError):
    """Something the user gave or has to set up: a path, an option, a migration. Exit 2."""

    exit_code = 2


class ServerUnreachable(OpsError):
    """PostgreSQL or Redis cannot be reached (down, wrong URL, wrong password). Exit 3."""

    exit_code = 3


class NotAllowed(UserError):
    """The caller may not do this at all (the HTTP API answers 403). Exit 2."""
