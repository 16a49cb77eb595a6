"""The model repository extension of the Open Inference Protocol, as Triton and MLServer expose it: list the
models, load one (again), unload one. tritonclient's get_model_repository_index, load_model and unload_model work
against it unchanged."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError

from app.deps import RegistryDep
from app.protocol import ErrorResponse
from app.runtime.registry import ModelState

V2_ERROR = {"model": ErrorResponse, "description": 'Protocol error: {"error": message}'}
router = APIRouter(
    prefix="/v2/repository",
    tags=["v2 model repository"],
    responses={400: V2_ERROR, 401: V2_ERROR, 404: V2_ERROR, 409: V2_ERROR, 422: V2_ERROR},
)


class IndexRequest(BaseModel):
    ready: bool = Field(False, description="list only the models ready to serve")


class LoadRequest(BaseModel):
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="Triton's `config` and file overrides are not supported: the folder is read"
    )


class UnloadRequest(BaseModel):
    parameters: dict[str, Any] = Field(default_factory=dict, description="`unload_dependents` is accepted (none)")


class IndexEntry(BaseModel):
    name: str
    version: str | None = Field(description="the card's version of the model serving (or last known)")
    state: Literal["READY", "UNAVAILABLE", "LOADING"]
    reason: str = Field(description="why it is not ready; for a ready model, a failed load since, if any")


Body_ = TypeVar("Body_", bound=BaseModel)


def json_body(model: type[Body_]) -> Any:
    """A dependency: the body as `model`, whatever its Content-Type (tritonclient sends none); empty: the defaults."""

    async def parse(request: Request) -> Body_:
        data = await request.body()
        try:
            return model.model_validate_json(data) if data.strip() else model()
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False)) from None

    return Depends(parse)


def entry(state: ModelState) -> IndexEntry:
    return IndexEntry(name=state.name, version=state.version, state=state.state, reason=state.reason)


@router.post("/index")
async def repository_index(
    registry: RegistryDep, body: Annotated[IndexRequest, json_body(IndexRequest)]
) -> list[IndexEntry]:
    """Every model of the repository (models/manifest.json as it is now) with its state: READY, UNAVAILABLE (with the
    reason: failed, unloaded, not loaded) or LOADING."""
    return [entry(state) for state in await registry.index(ready_only=body.ready)]


@router.post("/models/{name}/load")
async def load_model(
    name: str, registry: RegistryDep, body: Annotated[LoadRequest, json_body(LoadRequest)]
) -> IndexEntry:
    """Load the model from its folder again: card, checksum and graph checked, warmed up, then swapped in; requests
    in flight finish on the version they started with. On failure (400 `model_load_failed`) the version serving
    goes on serving, and the error says why."""
    overrides = sorted(body.parameters)
    if overrides:
        problem = f"load parameters {overrides} are not supported: the model is read from its folder"
        raise RequestValidationError([{"loc": ("body", "parameters"), "msg": problem, "type": "unsupported"}])
    model = await registry.load(name)
    return entry(registry.state(model.name))


@router.post("/models/{name}/unload")
async def unload_model(
    name: str, registry: RegistryDep, body: Annotated[UnloadRequest, json_body(UnloadRequest)]
) -> IndexEntry:
    """Stop serving the model (requests in flight finish); the default model cannot be unloaded (409
    `default_model_required`). Load it again to serve it."""
    await registry.unload(name)
    return entry(registry.state(name))
