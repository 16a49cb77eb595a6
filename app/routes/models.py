"""GET /models and /models/{name}: what the service serves, from the model cards."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter

from app.dataplane import layer_maps
from app.deps import RegistryDep
from app.errors import NoTemplates, UnknownModel
from app.routes.activations import Encoding
from app.routes.docs import ERRORS
from app.runtime.registry import LoadedModel, Registry
from app.schemas import LayerMaps, ModelDetail, ModelSummary

router = APIRouter(prefix="/models", tags=["models"])


def summarise(model: LoadedModel, registry: Registry) -> ModelSummary:
    card = model.card
    return ModelSummary(
        name=model.name,
        version=card.version if card else None,
        revision=model.revision,
        loaded_at=model.loaded_at,
        kind=card.kind if card else None,
        description=card.description if card else None,
        default=model.name == registry.default_model,
        status="ready" if model.available else "unavailable",
        error=model.error,
        providers=model.providers,
        input=card.input if card else None,
        outputs=card.outputs if card else [],
        activations=card.activations if card else [],
        parameters=card.parameters if card else None,
        test_accuracy=card.metrics.test_accuracy if card else None,
    )


@router.get("")
async def read_models(registry: RegistryDep) -> list[ModelSummary]:
    """Every model in the manifest, with its status and headline facts."""
    return [summarise(model, registry) for model in registry.models.values()]


@router.get("/{name}", responses={404: ERRORS[404]})
async def read_model(name: str, registry: RegistryDep) -> ModelDetail:
    """One model's status and its full card: metrics, confusion matrix, training configuration, versions."""
    model = registry.models.get(name)
    if model is None:
        raise UnknownModel(name, registry.models)
    return ModelDetail(**summarise(model, registry).model_dump(), card=model.card)


@router.get("/{name}/templates", responses={404: ERRORS[404]})
async def read_templates(name: str, registry: RegistryDep, encoding: Encoding = "json") -> LayerMaps:
    """A linear model's weights for each class as a 28x28 template (the notebook's weight images).

    Computed through the model itself: its evidence for an all-white image minus that for an all-black one.
    """
    model = registry.get(name)
    if model.card is None or model.card.kind != "linear":
        raise NoTemplates(f"Model {name!r} is a CNN; weight templates exist for the linear models (svm, softmax).")
    images = np.stack([np.ones((28, 28, 1), np.float32), np.zeros((28, 28, 1), np.float32)])
    evidence = (await model.infer(images, ["evidence"]))["evidence"]
    return layer_maps("templates", evidence[0] - evidence[1], encoding)
