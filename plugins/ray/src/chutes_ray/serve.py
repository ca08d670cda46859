"""Running a chute on Ray Serve (``chutes deploy REF --target ray``).

The chute becomes one Serve application whose ingress deployment serves the
chute's app through the chutes runtime, so every replica runs the startup
hooks once (in the app's lifespan), applies the egress policy, and answers
exactly as ``chutes run`` does. The scaling knobs map onto Serve's:

=========================================  ==============================================
chute                                      Ray Serve
=========================================  ==============================================
``concurrency``                            ``max_ongoing_requests``
``concurrency * scaling_threshold``        ``autoscaling_config.target_ongoing_requests``
``max_instances``                          ``autoscaling_config.max_replicas``
(scale to zero)                            ``autoscaling_config.min_replicas = 0``
``shutdown_after_seconds``                 ``downscale_delay_s``, ``downscale_to_zero_delay_s``
``node_selector.gpu_count``                ``ray_actor_options.num_gpus`` (0 with ``cpu_only``)
=========================================  ==============================================

One replica starts at deploy time (``initial_replicas = 1``), so a deploy
fails loudly when the chute cannot start; idle, it scales to zero.

Which cluster: ``address``, else ``RAY_ADDRESS``, else a Ray head on this
machine at ``127.0.0.1:$CHUTES_RAY_PORT`` (6379 by default), started when
nothing answers there. That head listens on loopback only.

Ray is imported only here, and only when used: ``pip install 'chutes[ray]'``.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chutes_core.errors import ChutesError, InvalidValueError

if TYPE_CHECKING:
    from chutes_core.chute import Chute

LOCAL_PORT_ENV = "CHUTES_RAY_PORT"
DEFAULT_LOCAL_PORT = 6379
#: With this at 0, Ray keeps a node on loopback instead of advertising the LAN address.
#: The local head and every driver that talks to a loopback address need it.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
#: Kept out of what Ray uploads as the working directory.
EXCLUDES = [".git", ".venv*", ".nox", "__pycache__", "*.pyc", "node_modules", "build", "dist"]

Progress = Callable[[str], None]


def _quiet(_line: str) -> None:
    pass


@dataclass(frozen=True)
class DeployResult:
    """What :func:`deploy` did."""

    application: str
    address: str
    url: str
    options: dict[str, Any]
    #: The process group of the local Ray head this deploy started, if it started one.
    started_head: int | None


def deployment_options(chute: Chute, *, cpu_only: bool = False) -> dict[str, Any]:
    """The Serve deployment options for ``chute``'s scaling knobs."""
    return {
        "name": chute.name,
        "max_ongoing_requests": chute.concurrency,
        "autoscaling_config": {
            "min_replicas": 0,
            "initial_replicas": 1,
            "max_replicas": chute.max_instances,
            "target_ongoing_requests": chute.concurrency * chute.scaling_threshold,
            "downscale_delay_s": float(chute.shutdown_after_seconds),
            "downscale_to_zero_delay_s": float(chute.shutdown_after_seconds),
        },
        "ray_actor_options": {"num_gpus": 0 if cpu_only else chute.node_selector.gpu_count},
    }


# The cluster ---------------------------------------------------------------------
def local_port() -> int:
    raw = os.environ.get(LOCAL_PORT_ENV, str(DEFAULT_LOCAL_PORT))
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 1024 <= port <= 65535:
        raise InvalidValueError(LOCAL_PORT_ENV, raw, "a port number from 1024 to 65535")
    return port


def resolve_address(address: str | None) -> tuple[str, bool]:
    """The cluster to use, and whether it is the local head chutes manages."""
    if address:
        return address, False
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"], False
    return f"127.0.0.1:{local_port()}", True


def start_local_head(port: int, *, num_cpus: int | None = None) -> int:
    """Start a Ray head on ``127.0.0.1:port``, detached, listening on loopback only.

    Returns its process group id: ``kill -- -PGID`` (or ``ray stop``) stops it.
    """
    command = [
        _ray_cli(), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
        # Ports Ray would otherwise fix, chosen free so another Ray on this machine is no clash.
        "--ray-client-server-port", str(_free_port()),
        "--dashboard-agent-listen-port", str(_free_port()),
        "--include-dashboard", "false", "--disable-usage-stats",
    ]  # fmt: skip
    if num_cpus is not None:
        command += ["--num-cpus", str(num_cpus)]
    process = subprocess.Popen(
        command,
        env={**os.environ, LOOPBACK_ENV: "0"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, out of the terminal's reach
    )
    try:
        output, _ = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise ChutesError(
            f"the local Ray head on 127.0.0.1:{port} did not start in 300 s"
        ) from None
    if process.returncode != 0:
        tail = " | ".join(output.strip().splitlines()[-3:])
        raise ChutesError(f"could not start a local Ray head on 127.0.0.1:{port}: {tail}")
    # `ray start` led the new session, so the daemons it left keep its pid as their group.
    return process.pid


def _ray_cli() -> str:
    beside = Path(sys.executable).with_name("ray")  # the venv's own, even when not on PATH
    found = str(beside) if beside.exists() else shutil.which("ray")
    if found is None:
        raise ChutesError("no `ray` command found: pip install 'chutes[ray]'")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a plain ``host:port`` address (not ``ray://`` or ``auto``)."""
    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=5):
            return True
    except OSError:
        return False


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ChutesError("deploying to Ray needs Ray Serve: pip install 'chutes[ray]'") from None
    return ray


def connect(address: str, *, working_dir: Path | None = None) -> None:
    """Connect this process to the cluster at ``address`` (once).

    ``working_dir`` is shipped to the cluster and becomes the replicas'
    working directory, so the chute's module imports there.
    """
    plain = _host_port(address)
    if plain is not None:
        host, port = plain
        if _is_loopback(host):
            # Must be set before Ray is imported: it decides the address this driver advertises.
            os.environ.setdefault(LOOPBACK_ENV, "0")
            _check_loopback_in_effect(address)
        if not _answers(host, port):
            raise ChutesError(f"no Ray cluster answers at {address}")
    ray = _ray()
    if ray.is_initialized():
        return
    runtime_env = {"working_dir": str(working_dir), "excludes": EXCLUDES} if working_dir else None
    try:
        ray.init(
            address=address, runtime_env=runtime_env, logging_level="WARNING", log_to_driver=False
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ChutesError(f"cannot connect to Ray at {address}: {_first_line(exc)}") from None
    logging.getLogger("ray.serve").setLevel(logging.WARNING)


def _check_loopback_in_effect(address: str) -> None:
    """Refuse (rather than hang) when Ray was imported before it could be kept on loopback:
    it would then look for the cluster at this machine's LAN address."""
    if "ray" not in sys.modules:
        return
    from ray._private import ray_constants

    if getattr(ray_constants, "ENABLE_RAY_CLUSTER", False):
        raise ChutesError(
            f"cannot reach the loopback cluster {address}: Ray was imported before chutes "
            f"could keep it on loopback; set {LOOPBACK_ENV}=0 before importing ray"
        )


def _connect_to(
    address: str | None, *, working_dir: Path | None, start: bool, progress: Progress
) -> tuple[str, bool, int | None]:
    target, local = resolve_address(address)
    started = None
    if local and not _answers("127.0.0.1", local_port()):
        if not start:
            raise ChutesError(f"no local Ray head at {target} (is it running? see `ray status`)")
        progress(f"starting a local Ray head at {target}")
        started = start_local_head(local_port())
        progress(f"started a local Ray head at {target} (stop it with `kill -- -{started}`)")
    connect(target, working_dir=working_dir)
    return target, local, started


# The application ----------------------------------------------------------------
class ChuteReplica:
    """A Serve replica serving one chute through the chutes runtime."""


def replica_ref(ref: str, project: Path) -> str:
    """``ref`` as a replica resolves it: a file path becomes relative to the working directory."""
    target, _, attr = ref.partition(":")
    if target.endswith(".py") or os.sep in target:
        path = Path(target).resolve()
        if project not in path.parents:
            raise ChutesError(
                f"{target} is outside {project}, the directory shipped to the cluster; "
                "run chutes deploy from the chute's project directory"
            )
        target = path.relative_to(project).as_posix()
    return f"{target}:{attr or 'chute'}"


def _build_asgi_app(ref: str, dev: bool) -> Any:
    """Runs in each replica: the runtime host around the chute (startup in its lifespan)."""
    from chutes_core.hosting import get_runtime
    from chutes_core.refs import load_ref

    return get_runtime().build_app(load_ref(ref), dev=dev)


def application(ref: str, chute: Chute, *, cpu_only: bool = False, dev: bool = False) -> Any:
    """The Serve application for ``chute`` (bound, not yet running); ``ref`` as replicas see it."""
    from ray import serve

    def build() -> Any:
        return _build_asgi_app(ref, dev)

    ingress = serve.ingress(build)(ChuteReplica)
    return serve.deployment(**deployment_options(chute, cpu_only=cpu_only))(ingress).bind()


def deploy(
    ref: str,
    *,
    address: str | None = None,
    cpu_only: bool = False,
    dev: bool = False,
    route_prefix: str = "/",
    http_host: str | None = None,
    http_port: int | None = None,
    project: Path | None = None,
    progress: Progress = _quiet,
) -> DeployResult:
    """Deploy (or update) ``ref`` as a Serve application named after the chute.

    Returns once the first replica has started (its startup hooks ran), or
    raises :class:`ChutesError` with the reason it could not.
    """
    from chutes_core.refs import load_ref

    project = (project or Path.cwd()).resolve()
    chute = load_ref(ref)
    remote_ref = replica_ref(ref, project)
    options = deployment_options(chute, cpu_only=cpu_only)
    target, local, started = _connect_to(
        address, working_dir=project, start=True, progress=progress
    )
    ray = _ray()
    from ray import serve

    _check_gpus(chute, options, ray.cluster_resources(), local=local, progress=progress)
    requested = {"host": http_host, "port": http_port}
    serve.start(http_options={k: v for k, v in requested.items() if v is not None} or None)
    progress(f"deploying {chute.name}: waiting for its first replica to start")
    try:
        serve.run(
            application(remote_ref, chute, cpu_only=cpu_only, dev=dev),
            name=chute.name,
            route_prefix=route_prefix,
        )
    except Exception as exc:
        raise ChutesError(
            f"{chute.name} did not start on Ray: {_first_line(exc)} "
            "(replica logs: session_latest/logs/serve/ under Ray's temp dir)"
        ) from None
    http = serve_details()["http_options"]
    for key, value in requested.items():
        if value is not None and http.get(key) != value:
            progress(
                f"note: Serve already runs with {key}={http.get(key)}; --http-{key} not applied"
            )
    return DeployResult(
        application=chute.name,
        address=target,
        url=_url(http, target, local, route_prefix),
        options=options,
        started_head=started,
    )


def _check_gpus(
    chute: Chute,
    options: dict[str, Any],
    resources: dict[str, float],
    *,
    local: bool,
    progress: Progress,
) -> None:
    needed = options["ray_actor_options"]["num_gpus"]
    have = resources.get("GPU", 0)
    if needed <= have:
        return
    message = (
        f"{chute.name} asks for {needed} GPU(s) per replica (node_selector.gpu_count) "
        f"and the cluster has {have:g}"
    )
    if local:  # nothing will add GPUs to this machine: fail now rather than wait forever
        raise ChutesError(
            f"{message}; pass --cpu-only (or set CHUTES_RAY_CPU_ONLY=1) to run on CPU"
        )
    progress(f"note: {message} now; replicas wait for a node with GPUs (or use --cpu-only)")


def _url(http: dict[str, Any], address: str, local: bool, route_prefix: str) -> str:
    host = str(http.get("host") or "127.0.0.1")
    if host in ("0.0.0.0", "::"):
        plain = _host_port(address.removeprefix("ray://"))
        host = "127.0.0.1" if local or plain is None else plain[0]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{http.get('port', 8000)}{route_prefix.rstrip('/')}/"


def undeploy(ref_or_name: str, *, address: str | None = None) -> str:
    """Delete the Serve application of a chute (given by reference or by name)."""
    name = ref_or_name
    if ":" in ref_or_name or ref_or_name.endswith(".py"):
        from chutes_core.refs import load_ref

        name = load_ref(ref_or_name).name
    target, _local, _started = _connect_to(address, working_dir=None, start=False, progress=_quiet)
    from ray import serve

    running = sorted(serve.status().applications)
    if name not in running:
        raise ChutesError(
            f"no application named {name!r} on Ray at {target} "
            f"(applications: {', '.join(running) or 'none'})"
        )
    serve.delete(name)
    return name


def serve_details() -> dict[str, Any]:
    """What Serve reports about itself: HTTP options, applications and their deployments."""
    # The same call `serve.status()` makes; it also carries each deployment's config.
    from ray.serve.context import _get_global_client

    return dict(_get_global_client().get_serve_details())


def deployed_config(name: str, *, address: str | None = None) -> dict[str, Any]:
    """The deployment config Serve holds for the chute ``name``, read back from Serve."""
    ray = sys.modules.get("ray")  # not imported here: connect() must come first
    if ray is None or not ray.is_initialized():
        connect(resolve_address(address)[0])
    application = serve_details()["applications"][name]
    return dict(application["deployments"][name]["deployment_config"])


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
