"""The loaded models: name -> card + ONNX Runtime session, built once at start-up from models/manifest.json."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio.to_thread
import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from pydantic import ValidationError

from app.cards import INPUT_NAME, ModelCard, read_card, read_manifest
from app.errors import ModelRestarting, ModelUnavailable, UnknownLayer, UnknownModel
from app.runtime.batcher import Batcher, Observer, Outputs
from app.runtime.explainer import open_explainer
from app.runtime.process import ModelProcess, ModelProcessLost
from app.runtime.session import (
    CPU,
    ModelLoadError,
    Provider,
    check_signature,
    open_session,
    requested_providers,
    session_options,
    warm_up,
)

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The service cannot start: no manifest, or the default model cannot be loaded."""


@dataclass(frozen=True)
class Observers:
    """Per-model callbacks that receive (images, seconds): of each model call, and of each batch's queue wait."""

    inference: Callable[[str], Observer]
    batch: Callable[[str], Observer]


@dataclass(frozen=True)
class RuntimeConfig:
    provider: Provider = "auto"
    intra_op_threads: int = 0
    inter_op_threads: int = 1
    batching: bool = True
    max_batch_size: int = 64
    batch_delay_ms: float = 0.0
    strict_provider: bool = False
    model_process: bool = False


@dataclass
class LoadedModel:
    """One model from the manifest: its card, and its session unless loading failed (then `error` says why)."""

    name: str
    card: ModelCard | None = None
    path: Path | None = None  # the verified ONNX file
    session: ort.InferenceSession | None = None
    providers: list[str] = field(default_factory=list)
    error: str | None = None
    batcher: Batcher | None = None
    process: ModelProcess | None = None  # where `call` runs the model; a worker thread when None
    observe_run: Observer | None = None  # (images, seconds) of each ONNX Runtime call
    explainer: ort.InferenceSession | None = None  # explain.onnx (app.runtime.explainer), in this process

    @property
    def available(self) -> bool:
        return self.session is not None and self.card is not None

    @property
    def activation_names(self) -> list[str]:
        return [layer.name for layer in self.card.activations] if self.card else []

    def check_layers(self, layers: Sequence[str]) -> list[str]:
        """The requested activation layers (all when none are named); UnknownLayer for a name the model lacks."""
        known = self.activation_names
        unknown = [layer for layer in layers if layer not in known]
        if unknown:
            raise UnknownLayer(f"Model {self.name!r} has no layer {unknown[0][:64]!r}; its layers: {', '.join(known)}.")
        return list(layers) or known

    def run(self, images: npt.NDArray[np.float32], outputs: Sequence[str]) -> Outputs:
        """(N, 28, 28, 1) float32 in [0, 1] -> the named outputs."""
        if self.session is None:
            raise ModelUnavailable(f"Model {self.name!r} is unavailable: {self.error}")
        names = list(outputs)
        start = time.perf_counter()
        values = self.session.run(names, {INPUT_NAME: images})
        if self.observe_run is not None:
            self.observe_run(len(images), time.perf_counter() - start)
        return dict(zip(names, values, strict=True))

    async def infer(self, images: npt.NDArray[np.float32], outputs: Sequence[str]) -> Outputs:
        """The named outputs, off the event loop (health checks keep answering): batched with concurrent requests,
        if enabled."""
        if self.batcher is not None:
            return await self.batcher.infer(images, outputs)
        return await self.call(images, outputs)

    async def call(self, images: npt.NDArray[np.float32], outputs: Sequence[str]) -> Outputs:
        """One model call: in the model process when there is one, else in a worker thread."""
        if self.process is None:
            # A timed-out request stops waiting at once; the thread finishes its call and its result is dropped.
            return await anyio.to_thread.run_sync(self.run, images, outputs, abandon_on_cancel=True)
        try:
            values, seconds = await self.process.run(self.name, images, outputs)
        except ModelProcessLost as exc:
            raise ModelRestarting(f"Model {self.name!r} is unavailable for now ({exc}); try again.") from exc
        if self.observe_run is not None:
            self.observe_run(len(images), seconds)
        return values


@dataclass
class Registry:
    models: dict[str, LoadedModel]
    default_model: str
    process: ModelProcess | None = None

    def get(self, name: str | None = None) -> LoadedModel:
        """The named (or default) model; UnknownModel or ModelUnavailable otherwise."""
        model = self.models.get(name or self.default_model)
        if model is None:
            raise UnknownModel(str(name), self.models)
        if not model.available:
            raise ModelUnavailable(f"Model {model.name!r} is unavailable: {model.error}")
        return model

    @property
    def restarting(self) -> bool:
        """The model process is down or starting: the models' calls wait for it, or fail."""
        return self.process is not None and not self.process.ready

    @property
    def unavailable(self) -> dict[str, str]:
        return {name: model.error or "not loaded" for name, model in self.models.items() if not model.available}

    async def close(self) -> None:
        for model in self.models.values():
            if model.batcher is not None:
                await model.batcher.close()
        if self.process is not None:
            self.process.close()  # on the event loop: calls still waiting there fail first


def load_model(name: str, folder: Path, providers: Sequence[str], options: ort.SessionOptions) -> LoadedModel:
    """Card, checksum, session, signature check and warm-up; a failure is recorded, not raised."""
    model = LoadedModel(name=name)
    try:
        model.card = read_card(folder)
        path = folder / model.card.file
        if not path.is_file():
            raise ModelLoadError(f"{path} is missing")
        if hashlib.sha256(path.read_bytes()).hexdigest() != model.card.file_sha256:
            raise ModelLoadError(f"{path} does not match the checksum in its card (corrupt or replaced)")
        session = open_session(path, providers, options)
        check_signature(session, model.card)
        warm_up(session)
    except (OSError, ValidationError, ModelLoadError) as exc:
        model.error = str(exc).splitlines()[0]
        log.error("model %s is unavailable: %s", name, model.error)
        return model
    model.path, model.session, model.providers = path, session, session.get_providers()
    model.explainer = open_explainer(folder, model.card, providers, options)
    log.info("model %s v%s loaded on %s", name, model.card.version, ", ".join(model.providers))
    return model


def load_registry(
    models_dir: Path,
    *,
    default_model: str,
    config: RuntimeConfig = RuntimeConfig(),
    observers: Observers | None = None,
) -> Registry:
    """Every model in the manifest; raises StartupError when the default model is not among the loaded ones."""
    try:
        manifest = read_manifest(models_dir)
    except (OSError, ValidationError) as exc:
        raise StartupError(f"cannot read {models_dir}/manifest.json: {str(exc).splitlines()[0]}") from exc
    try:
        providers = requested_providers(config.provider, strict=config.strict_provider)
    except ModelLoadError as exc:
        raise StartupError(str(exc)) from exc
    options = session_options(config.intra_op_threads, config.inter_op_threads)
    models = {e.name: load_model(e.name, models_dir / e.path, providers, options) for e in manifest.models}
    process = start_model_process(models, config) if config.model_process and providers == [CPU] else None
    for model in models.values():
        if model.available:
            model.process = process
        if observers is not None:
            model.observe_run = observers.inference(model.name)
        if config.batching and model.available:
            model.batcher = Batcher(
                model.call,
                max_batch=config.max_batch_size,
                max_delay_s=config.batch_delay_ms / 1000,
                observe=observers.batch(model.name) if observers else None,
            )
    default = models.get(default_model)
    if default is None or not default.available:
        reason = default.error if default else f"not in the manifest (models: {', '.join(models)})"
        raise StartupError(f"default model {default_model!r} cannot be served: {reason}")
    return Registry(models=models, default_model=default_model, process=process)


def start_model_process(models: dict[str, LoadedModel], config: RuntimeConfig) -> ModelProcess | None:
    """The available models opened again in a child process (see app.runtime.process); None, with the reason
    logged, if it cannot start: the models are then called from worker threads."""
    files = {m.name: m.path for m in models.values() if m.available and m.path is not None}
    if not files:
        return None
    process = ModelProcess(files, [CPU], config.intra_op_threads, config.inter_op_threads)
    process.start()
    try:
        process.wait_ready()
    except ModelProcessLost as exc:
        log.error("%s: calling the models from worker threads instead", exc)
        process.close()
        return None
    return process
