"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.deps import RegistryDep
from app.schemas import Health

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live")
async def live() -> Health:
    """The process answers."""
    return Health(status="alive")


@router.get("/ready", responses={503: {"model": Health, "description": "The default model is not serving"}})
async def ready(registry: RegistryDep, response: Response) -> Health:
    """Every model is loaded and warmed up (`degraded`: some failed to load, the default serves)."""
    statuses = {name: "ready" if m.available else f"unavailable: {m.error}" for name, m in registry.models.items()}
    if not registry.models[registry.default_model].available:
        response.status_code = 503
        return Health(status="not_ready", models=statuses)
    return Health(status="degraded" if registry.unavailable else "ready", models=statuses)
