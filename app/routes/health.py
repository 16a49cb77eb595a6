"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.deps import RegistryDep
from app.runtime.registry import Registry
from app.schemas import Health

router = APIRouter(prefix="/health", tags=["health"])


def takes_work(request: Request, registry: Registry) -> bool:
    """Whether a balancer should send this process requests: not stopping, no model process restarting, and the
    default model serving. /health/ready and the V2 /v2/health/ready (KServe's readiness probe) answer the same."""
    draining = getattr(request.app.state, "draining", False)
    return not draining and not registry.restarting and registry.models[registry.default_model].available


@router.get("/live")
async def live() -> Health:
    """The process answers."""
    return Health(status="alive")


@router.get(
    "/ready",
    responses={
        503: {"model": Health, "description": "The default model is not serving or is restarting, or the service stops"}
    },
)
async def ready(registry: RegistryDep, request: Request, response: Response) -> Health:
    """Every model is loaded and warmed up (`degraded`: some failed to load, the default serves); 503 while the
    default cannot serve or the model process is restarting, and `draining` from the moment the process is asked to
    stop, so no balancer sends it new work."""
    if getattr(request.app.state, "draining", False):
        response.status_code = 503
        return Health(status="draining")
    statuses = {name: "ready" if m.available else f"unavailable: {m.error}" for name, m in registry.models.items()}
    if registry.restarting:  # the model process was lost and a new one is starting: send traffic elsewhere
        statuses = {name: "restarting" if status == "ready" else status for name, status in statuses.items()}
    if registry.restarting or not registry.models[registry.default_model].available:
        response.status_code = 503
        return Health(status="not_ready", models=statuses)
    return Health(status="degraded" if registry.unavailable else "ready", models=statuses)
