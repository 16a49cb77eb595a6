"""GET /metrics: Prometheus text exposition of the service's collectors."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response)
async def read_metrics(request: Request) -> Response:
    """Request counts and latency per route and status, inference counts and latency, batch sizes, queue waits."""
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
