"""The host's own endpoints under ``/_chutes``: liveness, readiness, warm-up, metrics, jobs.

They answer in every state (liveness while a model downloads, readiness 503
until ready) and never count against the concurrency cap. The Open Inference
Protocol's ``/v2/health/live`` and ``/v2/health/ready`` are served as aliases.
Liveness and readiness are open to anyone; the rest need the caller
authenticated (see :mod:`chutes_runtime.dispatch`). Each job has a cap on its
runs in flight (429).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chutes_runtime import egress, netns
from chutes_runtime.jobs import JobBusy
from chutes_runtime.metrics import CONTENT_TYPE_LATEST
from chutes_runtime.routes import RESERVED_PREFIX
from chutes_runtime.warmup import OIP_LIVE, OIP_READY, status

if TYPE_CHECKING:
    from chutes_runtime.host import Host


def internal_app(host: Host) -> Starlette:
    """The ASGI app serving ``/_chutes/*`` for ``host``."""

    async def live(request: Request) -> Response:
        return JSONResponse({"status": "alive", "state": host.state})

    def egress_report() -> dict[str, object]:
        report: dict[str, object] = {"locked": egress.is_locked(), "layers": host.egress_layers}
        if netns.status.reason:
            report["netns_unavailable"] = netns.status.reason
        if netns.status.startup_egress:
            report["startup_egress"] = netns.status.startup_egress
        return report

    async def ready(request: Request) -> Response:
        if host.state != "ready":
            return JSONResponse(
                {
                    "status": "unready",
                    "state": host.state,
                    "reason": host.unready_reason,
                    "egress": egress_report(),
                },
                503,
            )
        try:
            health = await host.chute.health_check()
        except Exception as exc:
            health = {"status": "unhealthy", "error": f"{type(exc).__name__}: {exc}"}
        healthy = isinstance(health, dict) and health.get("status", "healthy") == "healthy"
        return JSONResponse(
            {"state": host.state, **health, "egress": egress_report()}, 200 if healthy else 503
        )

    async def warmup(request: Request) -> Response:
        return JSONResponse(status(host))

    async def metrics(request: Request) -> Response:
        return Response(host.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def list_jobs(request: Request) -> Response:
        return JSONResponse(
            {
                "jobs": [job.to_dict() for job in host.jobs.jobs.values()],
                "runs": [run.to_dict() for run in host.jobs.runs.values()],
            }
        )

    async def trigger_job(request: Request) -> Response:
        jobs = host.jobs
        name = request.path_params["name"]
        if name not in jobs.jobs:
            return JSONResponse(
                {"detail": f"no job named {name!r} (jobs: {', '.join(jobs.jobs) or 'none'})"},
                404,
            )
        if host.state != "ready":
            return JSONResponse({"detail": f"not ready: {host.unready_reason}"}, 503)
        body = await request.body()
        try:
            kwargs = (await request.json()) if body else {}
        except ValueError:
            return JSONResponse({"detail": "the job's arguments must be a JSON object"}, 422)
        if not isinstance(kwargs, dict):
            return JSONResponse({"detail": "the job's arguments must be a JSON object"}, 422)
        try:
            inspect.signature(jobs.jobs[name].fn).bind(host.chute, **kwargs)
        except TypeError as exc:
            return JSONResponse({"detail": f"job {name!r}: {exc}"}, 422)
        try:
            run = jobs.trigger(name, kwargs)
        except JobBusy as exc:
            return JSONResponse({"detail": str(exc)}, 429, headers={"retry-after": "1"})
        return JSONResponse(
            run.to_dict(), 202, headers={"location": f"{RESERVED_PREFIX}/jobs/runs/{run.id}"}
        )

    async def job_run(request: Request) -> Response:
        run = host.jobs.runs.get(request.path_params["run_id"])
        if run is None:
            return JSONResponse({"detail": "no such job run"}, 404)
        return JSONResponse(run.to_dict())

    return Starlette(
        routes=[
            Route(f"{RESERVED_PREFIX}/live", live),
            Route(f"{RESERVED_PREFIX}/ready", ready),
            Route(f"{RESERVED_PREFIX}/warmup", warmup),
            Route(OIP_LIVE, live),
            Route(OIP_READY, ready),
            Route(f"{RESERVED_PREFIX}/metrics", metrics),
            Route(f"{RESERVED_PREFIX}/jobs", list_jobs),
            Route(f"{RESERVED_PREFIX}/jobs/{{name}}", trigger_job, methods=["POST"]),
            Route(f"{RESERVED_PREFIX}/jobs/runs/{{run_id}}", job_run),
        ]
    )
