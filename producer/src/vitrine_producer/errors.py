"""The exceptions a producer can see, one per thing the caller must fix.

Each message is one line that says what to do, so a service can log it as is.
"""

from __future__ import annotations


class ProducerError(Exception):
    """Base class: catch this to handle every failure of vitrine_producer."""


class InvalidUpload(ProducerError, ValueError):
    """An argument cannot make a valid upload event (a ValueError, as callers expect)."""


class ProducerConfigError(ProducerError):
    """No broker is configured; the producer never guesses one or starts a server."""


class BrokerUnavailableError(ProducerError, ConnectionError):
    """The broker could not be reached; the message names host:port, never a password."""
