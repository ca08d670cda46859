"""What the egress lock lets through, case by case, in a fresh process (no network needed).

Only name lookups of numeric addresses (no packet even if the lock failed), loopback
and a Unix socket are tried here; connections beyond loopback are tried against the
namespaced test host in test_egress.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, os, socket, sys, tempfile
    from pathlib import Path
    from chutes_runtime import egress

    def lookup(host):
        text = host.decode() if isinstance(host, bytes) else host
        numeric = text[:1].isdigit() or ":" in text
        try:
            socket.getaddrinfo(host, 80, flags=socket.AI_NUMERICHOST if numeric else 0)
        except PermissionError as exc:
            return "refused: " + str(exc)
        except OSError:
            return "allowed"  # the lock let it through; the resolver had its say
        return "allowed"

    def connect(address, family=socket.AF_INET):
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.connect(address)
            except PermissionError as exc:
                return "refused: " + str(exc)
            except OSError:
                return "allowed"
        return "allowed"

    out = {"before_lock": egress.is_locked(), "open": lookup("192.0.2.1")}
    egress.lock()
    out["locked"] = egress.is_locked()
    # Children honour the lock while the "open" file is gone: the lock removed it.
    out["lock_file"] = os.environ[egress.OPEN_ENV]
    out["open_after_lock"] = Path(out["lock_file"]).exists()
    out["pythonpath"] = os.environ["PYTHONPATH"]
    names = ["localhost", "LOCALHOST", "localhost.localdomain", "ip6-localhost",
             "ip6-loopback", "127.0.0.1", "127.3.4.5", "::1", "::ffff:127.0.0.1",
             "::1%lo", "192.0.2.1", "::ffff:192.0.2.1", "2001:db8::1", "fe80::1%lo",
             "example.invalid"]
    out["bytes"] = {"127.0.0.1": lookup(b"127.0.0.1"), "192.0.2.1": lookup(b"192.0.2.1")}
    out["lookup"] = {name: lookup(name) for name in names}
    unix = os.path.join(tempfile.mkdtemp(), "s")
    out["connect"] = {
        "127.0.0.1": connect(("127.0.0.1", 9)),
        "unix": connect(unix, socket.AF_UNIX),
    }
    egress.unlock()
    out["after_unlock"] = {
        "locked": egress.is_locked(),
        "lock_file_left": Path(out["lock_file"]).exists(),
        "lock_dir_left": Path(out["lock_file"]).parent.exists(),
        "env": os.environ.get(egress.OPEN_ENV),
        "pythonpath": os.environ.get("PYTHONPATH"),
        "lookup": lookup("192.0.2.1"),
    }
    print(json.dumps(out))
    """
)


@pytest.mark.parametrize("pythonpath", ["/somewhere", None])
def test_what_the_lock_refuses_and_what_it_lets_through(pythonpath) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHUTES_")}
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    from chutes_runtime import egress

    assert out["before_lock"] is False and out["open"] == "allowed"
    assert out["locked"] is True and out["open_after_lock"] is False
    # Children started from now on load the lock; the caller's path is kept.
    assert out["pythonpath"].split(os.pathsep) == [egress.SITE_DIR, *filter(None, [pythonpath])]
    allowed = {"localhost", "LOCALHOST", "localhost.localdomain", "ip6-localhost"}
    allowed |= {"ip6-loopback", "127.0.0.1", "127.3.4.5", "::1", "::ffff:127.0.0.1", "::1%lo"}
    for name, outcome in out["lookup"].items():
        if name in allowed:
            assert outcome == "allowed", (name, outcome)
        else:
            assert outcome == (
                f"refused: egress is locked for this chute: name lookup of {name!r} refused"
            ), (name, outcome)
    assert out["bytes"]["127.0.0.1"] == "allowed"
    assert out["bytes"]["192.0.2.1"].startswith("refused: egress is locked")
    assert out["connect"] == {"127.0.0.1": "allowed", "unix": "allowed"}
    assert out["after_unlock"] == {
        "locked": False,
        "lock_file_left": False,
        "lock_dir_left": False,
        "env": None,
        "pythonpath": pythonpath,
        "lookup": "allowed",
    }


GUARD_SCRIPT = textwrap.dedent(
    """
    import json, os, socket, subprocess, sys
    from chutes_runtime import egress

    def attempt(action):
        try:
            action()
        except PermissionError as exc:
            return "refused: " + str(exc)
        except OSError:
            return "allowed"  # the lock let it through; the system had its say
        return "allowed"

    def numeric_lookup(host):  # never a resolver: AI_NUMERICHOST
        return attempt(lambda: socket.getaddrinfo(host, 80, flags=socket.AI_NUMERICHOST))

    def redefine(fn):
        def swap():
            fn.__defaults__ = fn.__defaults__
        return attempt(swap)

    def unrelated(a=1):
        return a

    def raw_socket():
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()

    netlink = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)  # opened before the lock

    CHILD = (
        "import socket, sys\\n"
        "for _ in sys.stdin:\\n"
        "    try:\\n"
        "        socket.getaddrinfo('192.0.2.1', 80, flags=socket.AI_NUMERICHOST)\\n"
        "        print('allowed', flush=True)\\n"
        "    except PermissionError as exc:\\n"
        "        print('refused: ' + str(exc), flush=True)\\n"
    )
    egress.stand_down()  # egress allowed, nothing prepared: the environment stays as it was
    out = {"stood_down": os.environ.get("PYTHONPATH")}
    egress.prepare()
    out["prepared"] = {"locked": egress.is_locked(), "guard": redefine(egress._loopback_ip)}
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    def ask_child():
        child.stdin.write("go\\n")
        child.stdin.flush()
        return child.stdout.readline().strip()
    out["child_before"] = ask_child()
    egress.lock(one_way=True)
    out["child_after"] = ask_child()
    child.stdin.close()
    child.wait(30)
    out["locked"] = egress.is_locked()
    out["guard"] = {name: redefine(getattr(egress, name)) for name in ("_is_local", "_loopback_ip")}
    out["unrelated"] = redefine(unrelated)
    out["invalid_utf8"] = numeric_lookup(b"\\xff\\xfe")
    out["raw"] = attempt(raw_socket)
    out["packet"] = attempt(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM).close())
    if os.environ.get("ISOLATED"):  # a network namespace of its own: nothing can leave
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        out["beyond"] = {
            "connect": attempt(lambda: udp.connect(("192.0.2.1", 9))),
            "sendto": attempt(lambda: udp.sendto(b"x", ("192.0.2.1", 9))),
            "sendmsg": attempt(lambda: udp.sendmsg([b"x"], [], 0, ("192.0.2.1", 9))),
        }
    out["netlink"] = attempt(lambda: netlink.connect((0, 0)))
    egress.unlock()  # a one-way lock stays
    out["after_unlock"] = {"locked": egress.is_locked(), "lookup": numeric_lookup("192.0.2.1")}
    print(json.dumps(out))
    """
)


def test_a_one_way_lock_cannot_be_lifted_or_changed_and_reaches_children() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHUTES_")}
    env.pop("PYTHONPATH", None)
    command = [sys.executable, "-c", GUARD_SCRIPT]
    # As root, in a network namespace of its own, datagrams beyond loopback are tried
    # too: if the lock failed they would find no route out.
    isolated = os.geteuid() == 0 and shutil.which("unshare") is not None
    if isolated:
        command, env["ISOLATED"] = ["unshare", "-n", *command], "1"
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    locked = "refused: egress is locked for this chute: "
    # Prepared, not yet locked: nothing is refused, in this process or in a child.
    assert out["stood_down"] is None
    assert out["prepared"] == {"locked": False, "guard": "allowed"}
    assert out["child_before"] == "allowed"
    # A child started before the lock is locked with it.
    assert out["child_after"] == locked + "name lookup of '192.0.2.1' refused"
    assert out["locked"] is True
    changed = locked + "its lock cannot be changed"
    assert out["guard"] == {"_is_local": changed, "_loopback_ip": changed}
    assert out["unrelated"] == "allowed"
    # A host name that is not UTF-8 is refused, not an error of another kind.
    assert out["invalid_utf8"].startswith(locked + "name lookup of ")
    assert out["raw"] == out["packet"] == locked + "packet and raw sockets refused"
    if isolated:
        refused = locked + "connection to ('192.0.2.1', 9) refused"
        assert out["beyond"] == {"connect": refused, "sendto": refused, "sendmsg": refused}
    # An address that is not a host (a netlink pair) is not loopback.
    assert out["netlink"] == locked + "connection to (0, 0) refused"
    assert out["after_unlock"] == {
        "locked": True,
        "lookup": locked + "name lookup of '192.0.2.1' refused",
    }


def test_a_loopback_name_counts_only_if_all_it_resolves_to_is_loopback() -> None:
    from chutes_runtime.egress import _is_local

    def resolving(*addresses: str):
        def gai(host, port):
            return [(0, 0, 0, "", (address, 0)) for address in addresses]

        return gai

    def failing(host, port):
        raise OSError("no resolver")

    assert _is_local(("localhost", 80), _gai=resolving("127.0.0.1", "::1")) is True
    assert _is_local(("localhost", 80), _gai=resolving("127.0.0.1", "192.0.2.1")) is False
    assert _is_local(("localhost", 80), _gai=resolving()) is False
    assert _is_local(("localhost", 80), _gai=failing) is False
    assert _is_local(("localhost", 80), False, _gai=failing) is True  # not resolved
    assert _is_local(("example.invalid", 80), _gai=resolving("127.0.0.1")) is False
