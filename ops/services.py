"""`vitrine services`: the servers vitrine uses, embedded or configured."""

from __future__ import annotations

from typing import Any

from vitrine.ops.errors import ServerUnreachable, UserError
from vitrine.ops.servers import redact
from vitrine.settings import Settings


def services(settings: Settings) -> dict[str, dict[str, Any]]:
    """What `services status` shows, passwords hidden; starts nothing."""
    try:
        from vitrine.embedded.services import services_status
    except ImportError:  # an installation without the embedded servers
        configured = {"postgres": settings.database_url, "redis": settings.redis_url}
        return {
            name: {"embedded": False, "running": None, "url": redact(url) if url else None}
            for name, url in configured.items()
        }
    status: dict[str, dict[str, Any]] = services_status(settings)
    for entry in status.values():
        for key in ("url", "psql_url"):
            value = entry.get(key)
            if isinstance(value, str):
                entry[key] = redact(value)
    return status


def stop(settings: Settings) -> list[str]:
    """Stop the embedded servers (their data stays); the names of those stopped."""
    try:
        from vitrine.embedded.common import ServiceError
        from vitrine.embedded.services import stop_services
    except ImportError:
        raise UserError("this installation has no embedded servers to stop") from None
    try:
        return stop_services(settings)
    except ServiceError as exc:
        raise ServerUnreachable(f"could not stop the embedded servers: {exc}") from None
