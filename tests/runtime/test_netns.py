"""The namespace mode of `chutes run`, against a test host in a network namespace this test creates.

Needs root (to create the test host's namespace; the chute's own namespace is
made as root or unprivileged, whichever the machine allows); skips elsewhere.
No packet goes anywhere but loopback and the test host: the relay refuses a
target off the allowlist before connecting, slirp4netns is routed to the test
host alone (a target off the list has no route), and every escape is aimed at
the test host. slirp4netns (Debian's package) is used where installed; without
it the clients that ignore proxies are checked to be refused before the lock too.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import subprocess
import sys
import textwrap

import httpx
import pytest

from chutes_testing.running import free_port

from . import conftest
from .test_egress import test_host  # noqa: F401  (the fixture)

ESCAPES = (
    "socket",
    "ctypes",
    "bash_dev_tcp",
    "curl",
    "fork_execv",
    "python_isolated",
    "python_cleared_env",
    "import_child",
    "reopened_open_file",
    "uvloop",
    "lock_attribute",
    "af_packet",
    "changed_hosts",
    "kept_tunnel",
    "kept_socket",
)


def seccomp_available() -> bool:
    from chutes_runtime import seccomp

    try:
        seccomp._binding()
    except (ImportError, OSError):
        return False
    return True


def off_list(target: str) -> str:
    """The test host's neighbour on its /30 (made by the test): not on the allowlist."""
    host, port = target.rsplit(":", 1)
    return f"{ipaddress.ip_address(host) - 1}:{port}"


NATIVE = (
    "socket",
    "ctypes",
    "bash_dev_tcp",
    "curl",
    "fork_execv",
    "python_isolated",
    "python_cleared_env",
    "uvloop",
)


def serve_probe(run_chute, test_host: str, **extra: str):  # noqa: F811
    """The probe chute, its allowlist the test host alone, with a listener on this machine's
    loopback that slirp4netns's gateway must not lead to; returns (served, /probe's "before")."""
    host = test_host.rsplit(":", 1)[0]
    with socket.create_server(("127.0.0.1", 0)) as machine_loopback:
        env = {
            "EGRESS_TARGET": test_host,
            "EGRESS_OFF_LIST": off_list(test_host),
            "EGRESS_HOST_LOOPBACK_PORT": str(machine_loopback.getsockname()[1]),
            "CHUTES_EGRESS_STARTUP_ALLOW": f"{host}/32",
            "CHUTES_EGRESS_ISOLATION": "require",
            **extra,
        }
        served = run_chute("netns_probe:chute", env=env)
        ready = httpx.get(f"{served.url}/_chutes/ready").json()
    return served, ready


@pytest.mark.netns
def test_every_escape_is_refused_after_the_lock(run_chute, test_host) -> None:  # noqa: F811
    served, ready = serve_probe(run_chute, test_host)
    layers = ["netns", "seccomp", "audit"] if seccomp_available() else ["netns", "audit"]
    egress = {k: v for k, v in ready["egress"].items() if k != "startup_egress"}
    assert egress == {"locked": True, "layers": layers}, ready
    assert "egress locked; layers: " + ", ".join(layers) in served.log
    models = httpx.get(f"{served.url}/v1/models", headers={"authorization": "Bearer k"})
    assert models.json()["data"][0]["id"] == "m", models.text  # the engine, after the lock
    result = httpx.get(f"{served.url}/probe", timeout=300).json()
    before = result["before"]
    # Before the lock, proxy clients reach the test host through the relay, on the list only.
    assert before["httpx"] == "connected", before
    assert before["curl"] == "connected", before
    assert before["kept"] == "connected", before
    assert before["off_list"].startswith("refused: 403"), before
    # Clients that ignore proxies: through slirp4netns where installed, routed to the list only.
    if shutil.which("slirp4netns"):
        assert "slirp4netns (routed: " in ready["egress"]["startup_egress"], ready
        assert before["native"] == dict.fromkeys(NATIVE, "connected"), before
        assert before["host_loopback"].startswith("refused"), before
        assert before["kept_socket"] == "connected", before  # then kept: refused after
    else:
        assert "relay only (slirp4netns is not installed)" in ready["egress"]["startup_egress"]
        assert all(out.startswith("refused") for out in before["native"].values()), before
    assert set(before["native_off_list"]) == set(NATIVE)
    reached = {k: v for k, v in before["native_off_list"].items() if not v.startswith("refused")}
    assert not reached, before["native_off_list"]
    assert set(result["after"]) == set(ESCAPES)
    escaped = {way: out for way, out in result["after"].items() if not out.startswith("refused")}
    assert not escaped, escaped
    assert result["loop"].startswith("uvloop"), result["loop"]
    metrics = httpx.get(f"{served.url}/_chutes/metrics").text
    assert 'chutes_egress_layer{layer="netns"} 1.0' in metrics


@pytest.mark.netns
def test_relay_only_startup_says_so(run_chute, test_host) -> None:  # noqa: F811
    """Without slirp4netns (simulated) startup egress is the relay only, and the host says so."""
    served, ready = serve_probe(run_chute, test_host, CHUTES_EGRESS_STARTUP_NET="relay")
    startup = ready["egress"]["startup_egress"]
    assert startup.startswith("the HTTP(S)_PROXY relay only (CHUTES_EGRESS_STARTUP_NET=relay)")
    assert "egress: startup egress through the HTTP(S)_PROXY relay only" in served.log
    assert "netns" in ready["egress"]["layers"], ready
    before = httpx.get(f"{served.url}/probe", timeout=300).json()["before"]
    assert before["httpx"] == "connected", before
    assert all(out.startswith("refused") for out in before["native"].values()), before


@pytest.mark.netns
def test_without_a_namespace_the_host_says_so(run_chute, tmp_path) -> None:
    """Simulated: a seccomp filter makes unshare() fail, as a locked-down container would."""
    if os.geteuid() != 0 or not seccomp_available():
        pytest.skip("needs root and a libseccomp binding to simulate a machine without namespaces")
    wrapper = tmp_path / "no_unshare.py"
    wrapper.write_text(
        textwrap.dedent(
            """
            import errno, os, sys
            from chutes_runtime.seccomp import _binding
            sc = _binding()
            rules = sc.SyscallFilter(defaction=sc.ALLOW)
            rules.add_rule(sc.ERRNO(errno.EPERM), "unshare")
            rules.load()
            os.execv(sys.executable, [sys.executable, "-m", "chutes_cli", *sys.argv[1:]])
            """
        )
    )
    # `python -m chutes_cli run`, started through the wrapper.
    port = free_port()

    environ = {k: v for k, v in os.environ.items() if not k.startswith("CHUTES_")}
    log = tmp_path / "auto.log"
    with log.open("wb") as out:
        auto = subprocess.Popen(
            [sys.executable, str(wrapper), "run", "egress_probe:chute", "--port", str(port)],
            cwd=conftest.APPS,
            env={**environ, "EGRESS_TARGET": "127.0.0.1:9", "HF_HUB_OFFLINE": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    served = conftest.Served(auto, f"http://127.0.0.1:{port}", log)
    try:
        served.wait_ready()
        ready = httpx.get(f"{served.url}/_chutes/ready").json()
        assert ready["egress"]["layers"] == ["seccomp", "audit"], ready
        assert "no network namespace" in ready["egress"]["netns_unavailable"], ready
        assert "NO network namespace layer" in served.log
    finally:
        served.kill()
    log = tmp_path / "require.log"
    with log.open("wb") as out:
        required = subprocess.run(
            [sys.executable, str(wrapper), "run", "egress_probe:chute", "--port", str(port)],
            cwd=conftest.APPS,
            env={
                **environ,
                "EGRESS_TARGET": "127.0.0.1:9",
                "HF_HUB_OFFLINE": "1",
                "CHUTES_EGRESS_ISOLATION": "require",
            },
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=60,
        )
    assert required.returncode == 1
    assert "refusing to start" in log.read_text()
