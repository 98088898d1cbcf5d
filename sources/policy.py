"""Which sources a worker may read: the policy, and the decisions it makes.

Upload events come from producers vitrine does not control. Without a policy, a message
naming `http://127.0.0.1:6379/`, `http://169.254.169.254/` or `file:///etc/shadow` makes
the worker a proxy into its own network and disk. So by default:

* http(s) may reach only public addresses. Loopback, link-local, private, shared
  (100.64/10), multicast, reserved and unspecified addresses are refused, judged on the
  *resolved* address of every hop (a redirect is a new hop), and the connection goes to
  the address that was judged, never to a second lookup (DNS rebinding). Operators whose
  image store is internal allow its networks with `VITRINE_FETCH_ALLOW_NETWORKS`.
* Local files are read only under `VITRINE_FILE_ROOTS` (default: the upload directory),
  judged on the real path, so a symlink out of a root is refused like any outside path.

A refusal is permanent: the row fails with the reason, the task is not retried.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: host, port -> the addresses it resolves to, in the resolver's order.
Resolver = Callable[[str, int], list[str]]


class PermanentError(Exception):
    """The upload can never be processed as given; the row fails with this message."""


class TransientError(Exception):
    """Worth trying again later (network, database or broker hiccup)."""


class RefusedSource(PermanentError):
    """The source policy forbids reading this upload; nothing was requested or opened."""


def system_resolver(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (IP literals resolve to themselves, no lookup)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise TransientError(f"cannot resolve {host}: {exc.strerror}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def parse_networks(values: Sequence[str]) -> tuple[IPNetwork, ...]:
    """`10.0.0.0/8`, `fd00::/8` or a single address; ValueError names the bad entry."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP network: {value!r} (write e.g. 10.0.0.0/8)") from None
    return tuple(networks)


@dataclass(frozen=True)
class SourcePolicy:
    allowed_networks: tuple[IPNetwork, ...] = ()
    file_roots: tuple[Path, ...] = ()
    max_bytes: int = 40 * 1024 * 1024
    #: Seconds one fetch may take in all, every hop and read included (vitrine.sources.fetch).
    timeout: float = 10.0
    max_redirects: int = 5
    resolver: Resolver = field(default=system_resolver, compare=False)

    def address_refusal(self, address: str) -> str | None:
        """Why connecting to `address` is refused, or None when it is allowed."""
        ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        if any(ip in net for net in self.allowed_networks):
            return None
        for kind, test in (
            ("loopback", ip.is_loopback),
            ("link-local", ip.is_link_local),
            ("multicast", ip.is_multicast),
            ("unspecified", ip.is_unspecified),
            ("reserved", ip.is_reserved),
            ("private", ip.is_private),
        ):
            if test:
                return f"{kind} address"
        if not ip.is_global:  # shared (100.64/10), documentation ranges and the like
            return "non-public address"
        return None

    def checked_address(self, host: str, port: int) -> str:
        """The address to connect to for `host`: every address it resolves to must pass,
        so a name that mixes public and internal addresses is refused as a whole."""
        addresses = self.resolver(host, port)
        if not addresses:
            raise TransientError(f"{host} resolves to no address")
        for address in addresses:
            reason = self.address_refusal(address)
            if reason is not None:
                shown = host if host == address else f"{host} ({address})"
                raise RefusedSource(
                    f"refused to fetch from {shown}: {reason}; allow internal image stores "
                    "with VITRINE_FETCH_ALLOW_NETWORKS"
                )
        return addresses[0]

    def checked_path(self, path: Path) -> Path:
        """The real path of `path` if it lies under a file root, else RefusedSource."""
        if not self.file_roots:
            raise RefusedSource(f"refused to read {path}: no file roots are configured")
        if "\x00" in str(path):
            raise RefusedSource("refused to read a path that contains a NUL byte")
        real = Path(os.path.realpath(path))
        if not any(real.is_relative_to(os.path.realpath(root)) for root in self.file_roots):
            # The roots stay unnamed: this text reaches merchants (images.error).
            raise RefusedSource(
                f"refused to read {path}: outside the workers' file roots (VITRINE_FILE_ROOTS)"
                + (" through a symlink" if real != Path(os.path.abspath(path)) else "")
            )
        return real

    def within_roots(self, real: str) -> bool:
        return any(Path(real).is_relative_to(os.path.realpath(r)) for r in self.file_roots)
