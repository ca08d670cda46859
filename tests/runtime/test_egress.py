"""The egress lock, against a test host in a network namespace this test creates.

The target lives on a veth pair in a private /30 that the test picks after
checking that no address or route of this machine overlaps it; no packet is
ever sent anywhere but loopback and that namespace.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import httpx
import pytest

from chutes_runtime import egress


@pytest.fixture(scope="module")
def test_host():
    """``address:port`` of an HTTP server inside a namespace reachable over a veth pair."""
    from chutes_testing.egress import NetnsUnavailable, namespaced_test_host

    host = namespaced_test_host()
    try:
        target = host.__enter__()
    except NetnsUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield target
    finally:
        host.__exit__(None, None, None)


def probe(run_chute, target: str, *, allow: bool) -> tuple[object, dict]:
    # The audit layer on its own (raw sockets have a way out during startup only
    # without the namespace; test_netns.py covers the namespace mode).
    env = {
        "EGRESS_TARGET": target,
        "EGRESS_ALLOW": "1" if allow else "0",
        "CHUTES_EGRESS_ISOLATION": "off",
    }
    served = run_chute("egress_probe:chute", env=env)
    return served, httpx.get(f"{served.url}/probe", timeout=90).json()


@pytest.mark.netns
def test_locked_after_startup_for_the_host_and_its_children(run_chute, test_host) -> None:
    served, result = probe(run_chute, test_host, allow=False)
    # Startup may still reach the network (to download weights)...
    assert set(result["before"].values()) == {"connected"}, result["before"]
    # ...afterwards nothing may: not the host, whatever client it uses, nor a child.
    assert isinstance(result["child"], dict), result["child"]
    for where in ("after", "child"):
        for way, outcome in result[where].items():
            assert outcome.startswith("refused") and "egress is locked" in outcome, (where, way)
    assert set(result["loopback"].values()) == {"connected"}
    assert "external egress locked after startup (decided by chute)" in served.log


@pytest.mark.netns
def test_a_chute_allowed_egress_is_never_locked(run_chute, test_host) -> None:
    _, result = probe(run_chute, test_host, allow=True)
    for where in ("before", "after", "child", "loopback"):
        assert set(result[where].values()) == {"connected"}, (where, result[where])


def test_the_child_lock_keeps_an_existing_sitecustomize(tmp_path) -> None:
    """The lock's sitecustomize must not hide one the environment already had."""
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "sitecustomize.py").write_text("import os\nos.environ['THEIRS_RAN'] = 'yes'\n")
    open_file = tmp_path / "open"  # absent: egress is locked
    script = textwrap.dedent(
        """
        import os, socket
        try:
            # A numeric address, so no lookup is made even if the lock failed.
            socket.getaddrinfo("198.51.100.7", 80, flags=socket.AI_NUMERICHOST)
            print("open", os.environ.get("THEIRS_RAN"))
        except PermissionError:
            print("locked", os.environ.get("THEIRS_RAN"))
        """
    )
    child = subprocess.run(
        [sys.executable, "-c", script],
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([egress.SITE_DIR, str(theirs)]),
            egress.OPEN_ENV: str(open_file),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.stdout.split() == ["locked", "yes"], child.stderr


def test_loopback_names_count_by_what_they_resolve_to() -> None:
    """A changed /etc/hosts cannot make ``localhost.localdomain`` a way out."""

    def hosts(address: str):
        return lambda host, port: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, 0))]

    assert egress._is_local(("localhost.localdomain", 80), _gai=hosts("127.0.0.1"))
    assert not egress._is_local(("localhost.localdomain", 80), _gai=hosts("198.51.100.7"))
    assert not egress._is_local(("example.invalid", 80), _gai=hosts("127.0.0.1"))
    assert egress._is_local("::1") and egress._is_local("::ffff:127.0.0.2")
    assert not egress._is_local("::ffff:198.51.100.7")


def test_a_locked_chute_runs_on_uvloop_only_with_the_kernel_layer() -> None:
    """uvloop connects in C, unseen by the audit hook: only the namespace covers it."""
    from chutes_runtime.server import event_loop

    assert event_loop(False) == "asyncio"
    assert event_loop(False, kernel_layer=True) == "auto"
    assert event_loop(True) == "auto"
