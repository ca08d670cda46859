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

The cluster and the connection to it are in :mod:`chutes_ray.cluster`.
Ray is imported only after :func:`~chutes_ray.cluster.connect` (it must
not be imported before the loopback setting is made).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chutes_core.errors import ChutesError
from chutes_ray.cluster import (
    Progress,
    connect,
    connect_to,
    first_line,
    host_port,
    quiet,
    ray_module,
    resolve_address,
)

if TYPE_CHECKING:
    from chutes_core.chute import Chute


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
    progress: Progress = quiet,
    chute: Chute | None = None,
) -> DeployResult:
    """Deploy (or update) ``ref`` as a Serve application named after the chute.

    Returns once the first replica has started (its startup hooks ran), or
    raises :class:`ChutesError` with the reason it could not. ``chute`` is
    ``ref`` already loaded, if it was.
    """
    from chutes_core.refs import load_ref

    project = (project or Path.cwd()).resolve()
    if chute is None:
        chute = load_ref(ref)
    remote_ref = replica_ref(ref, project)
    options = deployment_options(chute, cpu_only=cpu_only)
    target, local, started = connect_to(address, working_dir=project, start=True, progress=progress)
    ray = ray_module()
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
            f"{chute.name} did not start on Ray: {first_line(exc)} "
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
        plain = host_port(address.removeprefix("ray://"))
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
    target, _local, _started = connect_to(address, working_dir=None, start=False, progress=quiet)
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
