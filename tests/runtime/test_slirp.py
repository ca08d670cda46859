"""What the namespace's startup way out through slirp4netns routes, for each allowlist.

Pure planning: no namespace, no slirp4netns process, no root. test_netns.py
serves a chute through it against a namespaced test host.
"""

from __future__ import annotations

import pytest

from chutes_runtime import slirp
from chutes_runtime.relay import Allowlist


@pytest.fixture(autouse=True)
def installed(monkeypatch) -> None:
    monkeypatch.setattr(slirp.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.delenv(slirp.STARTUP_NET_ENV, raising=False)


def test_no_allowlist_routes_everything_with_dns() -> None:
    way, why = slirp.plan(Allowlist())
    assert way is not None and why == ""
    assert way["routes"] == ["0.0.0.0/0"] and way["dns"] is True
    assert (way["cidr"], way["gateway"], way["address"]) == (
        "10.0.2.0/24",
        "10.0.2.2",
        "10.0.2.100",
    )


def test_an_allowlist_routes_its_ipv4_networks_only_and_no_dns() -> None:
    way, _ = slirp.plan(Allowlist.parse("hf.co, 203.0.113.7, 198.51.100.0/24, 2001:db8::/32"))
    assert way is not None
    assert way["routes"] == ["203.0.113.7/32", "198.51.100.0/24"] and way["dns"] is False


def test_slirp4netns_network_steers_clear_of_the_allowlist() -> None:
    way, _ = slirp.plan(Allowlist.parse("10.0.0.0/8"))
    assert way is not None and way["cidr"] == "172.30.254.0/24", way
    assert way["gateway"] == "172.30.254.2"


@pytest.mark.parametrize(
    ("allow", "env", "installed", "why"),
    [
        ("hf.co,.example.org", None, True, "names no IPv4 address"),
        ("", "relay", True, "CHUTES_EGRESS_STARTUP_NET=relay"),
        ("", None, False, "slirp4netns is not installed"),
    ],
)
def test_relay_only_and_why(monkeypatch, allow, env, installed, why) -> None:
    if env:
        monkeypatch.setenv(slirp.STARTUP_NET_ENV, env)
    if not installed:
        monkeypatch.setattr(slirp.shutil, "which", lambda name: None)
    way, reason = slirp.plan(Allowlist.parse(allow))
    assert way is None and why in reason


def test_an_unknown_mode_is_refused(monkeypatch) -> None:
    monkeypatch.setenv(slirp.STARTUP_NET_ENV, "pasta")
    with pytest.raises(ValueError, match="auto or relay"):
        slirp.plan(Allowlist())
