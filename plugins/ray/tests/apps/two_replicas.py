"""Deploy ``minilm:chute`` a second time, as ``minilm-pair`` with exactly two replicas.

Usage (from this directory): python two_replicas.py RAY_ADDRESS

The chute's own knobs autoscale from one replica; this fixes the replica count
so the test sees startup run in two replica processes. The replicas reserve no
CPU, so they fit beside the other applications on a two-core head.
"""

import sys
from pathlib import Path

from chutes_ray.cluster import connect

connect(sys.argv[1], working_dir=Path.cwd())  # before Ray is imported

from chutes_ray.serve import ChuteReplica, deployment_options  # noqa: E402
from ray import serve  # noqa: E402

from chutes_core.refs import load_ref  # noqa: E402

REF = "minilm:chute"


def build():
    """Runs in each replica, as the deploy target's own application does."""
    from chutes_core.hosting import get_runtime

    return get_runtime().build_app(load_ref(REF), dev=False)


options = deployment_options(load_ref(REF), cpu_only=True)
del options["autoscaling_config"]
options.update(name="minilm-pair", num_replicas=2, ray_actor_options={"num_gpus": 0, "num_cpus": 0})
serve.run(
    serve.deployment(**options)(serve.ingress(build)(ChuteReplica)).bind(),
    name="minilm-pair",
    route_prefix="/pair",
)
print("deployed minilm-pair")
