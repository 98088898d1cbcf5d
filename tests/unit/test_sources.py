"""The source policy's decisions, on addresses, a resolver this test controls, and files.

Every connection here goes to a loopback HTTP server started by the test; the policy's
verdicts on public or internal addresses are checked without connecting anywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vitrine.sources.policy import (
    RefusedSource,
    SourcePolicy,
    TransientError,
    parse_networks,
    system_resolver,
)

REFUSED = {
    "127.0.0.1": "loopback",
    "127.8.9.10": "loopback",
    "::1": "loopback",
    "::ffff:127.0.0.1": "loopback",  # IPv4-mapped IPv6 is judged as the IPv4 address
    "169.254.169.254": "link-local",  # cloud metadata services live here
    "fe80::1": "link-local",
    "10.1.2.3": "private",
    "172.16.0.1": "private",
    "192.168.1.1": "private",
    "fd00::1": "private",
    "224.0.0.1": "multicast",
    "ff02::1": "multicast",
    "0.0.0.0": "unspecified",
    "240.0.0.1": "reserved",
    "100.64.0.1": "non-public",  # carrier-grade NAT (shared address space)
    "192.0.2.10": "private",  # documentation range (TEST-NET-1)
}
ALLOWED = ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "151.101.1.140"]


@pytest.mark.parametrize(("address", "kind"), REFUSED.items())
def test_internal_addresses_are_refused_by_default(address: str, kind: str) -> None:
    reason = SourcePolicy().address_refusal(address)
    assert reason is not None and kind in reason


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address: str) -> None:
    assert SourcePolicy().address_refusal(address) is None


def test_the_allow_list_opens_only_its_networks() -> None:
    policy = SourcePolicy(allowed_networks=parse_networks(["10.20.0.0/16", "127.0.0.2"]))
    assert policy.address_refusal("10.20.3.4") is None
    assert policy.address_refusal("127.0.0.2") is None
    assert policy.address_refusal("10.21.0.1") is not None
    assert policy.address_refusal("127.0.0.1") is not None
    with pytest.raises(ValueError, match="not an IP network"):
        parse_networks(["images.internal"])


class FakeResolver:
    """DNS as an attacker would run it: answers change from one query to the next."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def test_a_name_is_judged_on_every_address_it_resolves_to() -> None:
    resolver = FakeResolver(["93.184.216.34", "10.0.0.7"])
    with pytest.raises(RefusedSource, match=r"cdn.example.com \(10.0.0.7\): private"):
        SourcePolicy(resolver=resolver).checked_address("cdn.example.com", 443)
    public = FakeResolver(["93.184.216.34", "151.101.1.140"])
    assert SourcePolicy(resolver=public).checked_address("cdn.example.com", 443) == "93.184.216.34"
    with pytest.raises(TransientError, match="no address"):
        SourcePolicy(resolver=FakeResolver([])).checked_address("void.example", 80)


def test_ip_literals_resolve_without_a_lookup() -> None:
    assert system_resolver("127.0.0.1", 80) == ["127.0.0.1"]
    assert system_resolver("::1", 80) == ["::1"]


# --------------------------------------------------------------------------- files


def test_files_are_read_only_under_the_roots(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "sub" / "ok.png").write_bytes(b"x")
    (outside / "secret.txt").write_text("secret")
    (root / "link.png").symlink_to(outside / "secret.txt")
    (root / "inner.png").symlink_to(root / "sub" / "ok.png")
    policy = SourcePolicy(file_roots=(root,))

    assert policy.checked_path(root / "sub" / "ok.png") == (root / "sub" / "ok.png").resolve()
    assert policy.checked_path(root / "inner.png") == (root / "sub" / "ok.png").resolve()
    with pytest.raises(RefusedSource, match="outside the workers. file roots.*through a symlink"):
        policy.checked_path(root / "link.png")
    with pytest.raises(RefusedSource, match="outside the workers. file roots"):
        policy.checked_path(root / ".." / "outside" / "secret.txt")
    with pytest.raises(RefusedSource, match="outside the workers. file roots"):
        policy.checked_path(Path("/etc/passwd"))
    with pytest.raises(RefusedSource, match="no file roots"):
        SourcePolicy().checked_path(root / "sub" / "ok.png")


def test_a_root_given_through_a_symlink_still_counts(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "a.png").write_bytes(b"x")
    os.symlink(real, tmp_path / "alias")
    policy = SourcePolicy(file_roots=(tmp_path / "alias",))
    assert policy.checked_path(tmp_path / "alias" / "a.png") == (real / "a.png").resolve()
