"""Tries every known way around the egress lock, before it and after (target in EGRESS_TARGET).

Served with ``chutes run`` in the namespace mode. Startup reaches the target
through the relay (proxy clients), keeps one tunnel open, tries the clients
that ignore proxies (through slirp4netns, where installed), checks that a
target off the allowlist (EGRESS_OFF_LIST) is refused either way and that
slirp4netns's gateway does not lead to the machine's loopback
(EGRESS_HOST_LOOPBACK_PORT), and starts the stand-in engine on the namespace's
loopback. ``/probe`` then tries each escape.
"""

import asyncio
import ctypes
import os
import socket
import subprocess
import sys
import tempfile
import threading

import httpx

from chutes.chute import Chute
from chutes_runtime import egress

HOST, PORT = os.environ["EGRESS_TARGET"].rsplit(":", 1)
OFF_LIST = os.environ["EGRESS_OFF_LIST"]
WORK = tempfile.mkdtemp(prefix="netns-probe-")

CONNECT = f"""
import socket, sys
host = sys.argv[1] if len(sys.argv) > 1 else {HOST!r}
try:
    socket.create_connection((host, {PORT}), timeout=3).close()
    print("connected")
except Exception as exc:
    print(f"refused: {{type(exc).__name__}}: {{exc}}")
"""

# A child started at import, by a Python that skips the hook: it waits for a
# go-ahead after the lock, then tries.
with open(f"{WORK}/import_child.py", "w") as script:
    script.write(
        f"import os, time\nwhile not os.path.exists({WORK + '/go'!r}): time.sleep(0.05)\n" + CONNECT
    )
with open(f"{WORK}/import_child.out", "w") as _out:
    IMPORT_CHILD = subprocess.Popen(
        [sys.executable, "-I", "-S", f"{WORK}/import_child.py"], stdout=_out
    )

with socket.socket() as _free:
    _free.bind(("127.0.0.1", 0))
    ENGINE_PORT = _free.getsockname()[1]

chute = Chute(username="test", name="netns-probe", allow_external_egress=False)


def run(command, **kwargs) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, **kwargs)
    out = (done.stdout + done.stderr).strip()
    return (
        out
        if out.startswith(("connected", "refused"))
        else f"refused: exit {done.returncode}: {out}"
    )


def python_child(*flags: str, env=None, host: str = HOST) -> str:
    return run([sys.executable, *flags, "-c", CONNECT, host], env=env)


def ctypes_connect(host: str = HOST, port: int = int(PORT)) -> str:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.socket(socket.AF_INET, socket.SOCK_STREAM, 0)
    address = socket.inet_aton(host)
    sockaddr = (ctypes.c_ubyte * 16)(2, 0, *port.to_bytes(2, "big"), *address)
    result = libc.connect(fd, sockaddr, 16)
    error = ctypes.get_errno()
    os.close(fd)
    return "connected" if result == 0 else f"refused: {os.strerror(error)}"


def shell(line: str) -> str:
    return run(["bash", "-c", f"{line} && echo connected || echo refused"])


def fork_execv(host: str = HOST) -> str:
    pid = os.fork()
    if pid == 0:
        os.execv("/bin/bash", ["bash", "-c", f"exec 3<>/dev/tcp/{host}/{PORT}"])
    _, status = os.waitpid(pid, 0)
    return "connected" if os.waitstatus_to_exitcode(status) == 0 else "refused"


def import_child() -> str:
    open(f"{WORK}/go", "w").close()
    IMPORT_CHILD.wait(30)
    with open(f"{WORK}/import_child.out") as out:
        return out.read().strip()


def reopened_file() -> str:
    open(os.environ[egress.OPEN_ENV], "w").close()  # undo the audit layer's lock for children
    try:
        return python_child()
    finally:
        os.unlink(os.environ[egress.OPEN_ENV])


def uvloop_connect(host: str = HOST) -> str:
    import uvloop

    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(asyncio.open_connection(host, int(PORT)), 3))
        return "connected"
    except Exception as exc:
        return f"refused: {type(exc).__name__}: {exc}"
    finally:
        loop.close()


def lock_attribute() -> str:
    egress._gate._on = False  # type: ignore[union-attr]
    egress._one_way = False
    try:
        socket.create_connection((HOST, int(PORT)), timeout=3).close()
        return "connected"
    except Exception as exc:
        return f"refused: {type(exc).__name__}: {exc}"


def packet_socket() -> str:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.socket(17, socket.SOCK_RAW, socket.htons(3))  # AF_PACKET, ETH_P_ALL
    if fd < 0:
        return f"refused: {os.strerror(ctypes.get_errno())}"
    os.close(fd)
    with open("/proc/self/net/dev") as dev:
        interfaces = [line.split(":")[0].strip() for line in dev.readlines()[2:]]
    return "refused: only loopback to send on" if interfaces == ["lo"] else f"open: {interfaces}"


def changed_hosts() -> str:
    hosts = f"{WORK}/hosts"
    with open(hosts, "w") as file:
        file.write(f"{HOST} localhost.localdomain\n")
    with open(f"{WORK}/connect.py", "w") as file:
        file.write(CONNECT)
    script = f"mount --bind {hosts} /etc/hosts && exec {sys.executable} {WORK}/connect.py localhost.localdomain"
    return run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script])


def kept_tunnel(sock: socket.socket) -> str:
    try:
        sock.settimeout(3)
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        return "connected" if sock.recv(100).startswith(b"HTTP/") else "refused: closed"
    except OSError as exc:
        return f"refused: {exc}"


def tunnel() -> socket.socket:
    """A CONNECT tunnel through the startup proxy, kept for after the lock."""
    proxy = httpx.URL(os.environ["HTTP_PROXY"])
    sock = socket.create_connection((proxy.host, proxy.port), timeout=3)
    sock.sendall(f"CONNECT {HOST}:{PORT} HTTP/1.1\r\n\r\n".encode())
    assert sock.recv(100).startswith(b"HTTP/1.1 200")
    return sock


def native(host: str = HOST) -> dict[str, str]:
    """The clients that ignore proxy settings (slirp4netns is their way out before the lock)."""
    return {
        "socket": python_child(host=host),
        "ctypes": ctypes_connect(host),
        "bash_dev_tcp": shell(f"exec 3<>/dev/tcp/{host}/{PORT}"),
        "curl": shell(f"curl -sf -m 3 --noproxy '*' -o /dev/null http://{host}:{PORT}/"),
        "fork_execv": fork_execv(host),
        "python_isolated": python_child("-I", "-S", "-E", host=host),
        "python_cleared_env": python_child(env={}, host=host),
        "uvloop": uvloop_connect(host),
    }


def host_loopback() -> str:
    """slirp4netns's gateway stands for the machine's 127.0.0.1 unless told not to."""
    from chutes_runtime import netns

    if "slirp4netns" not in netns.status.startup_egress:
        return "refused: no slirp4netns"
    with open("/proc/self/net/route") as routes:  # Iface Destination Gateway ...
        gateways = {line.split()[2] for line in routes.readlines()[1:]} - {"00000000"}
    gateway = socket.inet_ntoa(int(gateways.pop(), 16).to_bytes(4, "little"))
    return ctypes_connect(gateway, int(os.environ["EGRESS_HOST_LOOPBACK_PORT"]))


def via_proxy(url: str) -> str:
    try:
        status = httpx.get(url, timeout=5).status_code
    except httpx.HTTPError as exc:
        return f"refused: {type(exc).__name__}: {exc}"
    return "connected" if status == 200 else f"refused: {status}"


@chute.on_startup()
async def before_lock(self):
    self.engine = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chutes_testing.openai_standin",
            "--port",
            str(ENGINE_PORT),
            "--api-key",
            "k",
            "--model",
            "m",
        ]
    )
    for _ in range(300):
        try:
            httpx.get(f"http://127.0.0.1:{ENGINE_PORT}/v1/models", timeout=1)
            break
        except httpx.TransportError:
            await asyncio.sleep(0.05)
    self.kept = tunnel()
    try:  # a plain connection, through slirp4netns where installed, kept for after the lock
        self.kept_socket = socket.create_connection((HOST, int(PORT)), timeout=3)
    except OSError:
        self.kept_socket = None
    self.before = {
        "httpx": via_proxy(f"http://{HOST}:{PORT}/"),
        "curl": shell(f"curl -sf -m 5 -o /dev/null http://{HOST}:{PORT}/"),
        "off_list": via_proxy(f"http://{OFF_LIST}/"),
        "kept": kept_tunnel(tunnel()),
    }
    # off the event loop: uvloop runs a loop of its own
    self.before["native"] = await asyncio.to_thread(native)
    self.before["native_off_list"] = await asyncio.to_thread(native, OFF_LIST.rsplit(":", 1)[0])
    self.before["host_loopback"] = host_loopback()
    self.before["kept_socket"] = "connected" if self.kept_socket else "refused"


@chute.on_shutdown()
async def stop_engine(self):
    self.engine.terminate()


@chute.cord(
    passthrough=True, passthrough_port=ENGINE_PORT, public_api_path="/v1/models", method="GET"
)
async def models(self):
    """Forwarded to the stand-in engine on the namespace's loopback."""


@chute.cord(method="GET")
async def probe(self) -> dict:
    ways = {
        "socket": lambda: python_child(),
        "ctypes": ctypes_connect,
        "bash_dev_tcp": lambda: shell(f"exec 3<>/dev/tcp/{HOST}/{PORT}"),
        "curl": lambda: shell(f"curl -sf -m 3 -o /dev/null http://{HOST}:{PORT}/"),
        "fork_execv": fork_execv,
        "python_isolated": lambda: python_child("-I", "-S", "-E"),
        "python_cleared_env": lambda: python_child(env={}),
        "import_child": import_child,
        "reopened_open_file": reopened_file,
        "uvloop": uvloop_connect,
        "lock_attribute": lock_attribute,
        "af_packet": packet_socket,
        "changed_hosts": changed_hosts,
        "kept_tunnel": lambda: kept_tunnel(self.kept),
        "kept_socket": lambda: kept_tunnel(self.kept_socket) if self.kept_socket else "refused",
    }
    results = {}
    for name, way in ways.items():  # each off the event loop, in a thread of its own
        box: list[str] = []
        worker = threading.Thread(target=lambda w=way, b=box: b.append(w()))
        worker.start()
        await asyncio.to_thread(worker.join, 60)
        results[name] = box[0] if box else "refused: no answer"
    # The kernel layer covers uvloop, so the host serves on it (chutes_runtime.server).
    loop = type(asyncio.get_running_loop()).__module__
    return {"before": self.before, "after": results, "loop": loop}
