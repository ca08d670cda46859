"""The chutes plugin: registers the ``ray`` deploy target. Imports no Ray."""

from __future__ import annotations

from chutes_core.deploy_targets import DeployTargetRegister
from chutes_core.hookspecs import hookimpl
from chutes_ray.target import RayTarget


@hookimpl
def register_deploy_targets(register: DeployTargetRegister) -> None:
    register("ray", RayTarget())
