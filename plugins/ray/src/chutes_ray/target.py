"""The ``ray`` deploy target: its options, and the calls into :mod:`chutes_ray.serve`.

Nothing here imports Ray: ``chutes deploy --help`` loads this module, and
Ray must not be imported before :func:`chutes_ray.cluster.connect` has kept
a loopback cluster on loopback.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from chutes_core.deploy_targets import DeployContext, DeployOption, DeployTarget

if TYPE_CHECKING:
    from chutes_core.chute import Chute

#: Set to 1 to deploy without GPUs (the same as --cpu-only).
CPU_ONLY_ENV = "CHUTES_RAY_CPU_ONLY"


class RayTarget(DeployTarget):
    """Each chute becomes a Ray Serve application; see :mod:`chutes_ray.serve`."""

    description = "Ray Serve: a local Ray head, or your cluster with --address"
    options = (
        DeployOption(
            "address",
            "The Ray cluster's address (default: RAY_ADDRESS, else a local Ray head).",
            undeploy=True,
        ),
        DeployOption(
            "cpu_only",
            "Ask for no GPUs, whatever the node selector says (CPU-only machines).",
            type=bool,
            envvar=CPU_ONLY_ENV,
        ),
        DeployOption("route_prefix", "The HTTP path prefix of the chute (default: /)."),
        DeployOption("http_host", "The address Serve binds (when it starts Serve)."),
        DeployOption("http_port", "The port Serve binds (when it starts Serve).", type=int),
    )

    def deploy(self, ref: str, chute: Chute, *, context: DeployContext, **options: Any) -> str:
        from chutes_ray import serve

        result = serve.deploy(ref, chute=chute, progress=context.progress, **options)
        context.debug(json.dumps(result.options, indent=2))
        return f"deployed {result.application} on Ray ({result.address}): {result.url}"

    def undeploy(self, ref_or_name: str, *, context: DeployContext, **options: Any) -> str:
        from chutes_ray import serve

        return f"removed {serve.undeploy(ref_or_name, **options)} from Ray"
