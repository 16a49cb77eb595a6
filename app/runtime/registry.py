"""The loaded models: name -> LoadedModel, from models/manifest.json; loaded again, or unloaded, at run time as
Triton's and MLServer's model repository extension asks (index, load, unload)."""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread
from pydantic import ValidationError

from app.cards import read_manifest
from app.errors import DefaultModelRequired, ModelLoadFailed, ModelUnavailable, UnknownModel
from app.runtime.batcher import Batcher, Observer
from app.runtime.executor import Executor, InThreads
from app.runtime.explainer import open_explainer
from app.runtime.line_reader import open_line_reader
from app.runtime.model import LoadedModel, ModelState, Stamp, folder_stamp, verified_card
from app.runtime.pair_reader import open_pair_reader
from app.runtime.process import ModelProcess, ModelProcessLost
from app.runtime.session import CPU, ModelLoadError, Provider, requested_providers, session_options

log = logging.getLogger(__name__)

__all__ = ["LoadedModel", "ModelState", "Observers", "Registry", "RuntimeConfig", "StartupError", "load_registry"]
LOAD_ERRORS = (OSError, ValidationError, ModelLoadError)


class StartupError(Exception):
    """The service cannot start: no manifest, or the default model cannot be loaded."""


def _ignore(*_: object) -> None:
    return None


@dataclass(frozen=True)
class Observers:
    """Per-model callbacks: (images, seconds) of each model call and of each batch's queue wait; the version that
    serves after each change ((model, card version, revision); None, None when none serves); each load's outcome."""

    inference: Callable[[str], Observer]
    batch: Callable[[str], Observer]
    serving: Callable[[str, str | None, str | None], None] = _ignore
    load: Callable[[str, bool], None] = _ignore


@dataclass(frozen=True)
class RuntimeConfig:
    """How the models run: built from Settings by app.main.runtime_config (Settings holds every default)."""

    provider: Provider
    intra_op_threads: int
    inter_op_threads: int
    batching: bool
    max_batch_size: int
    batch_delay_ms: float
    strict_provider: bool
    model_process: bool


def first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class Registry:
    """The models that serve, and the repository operations that change them: index, load, unload."""

    def __init__(
        self, models_dir: Path, default_model: str, executor: Executor, config: RuntimeConfig, observers: Observers
    ) -> None:
        self.models: dict[str, LoadedModel] = {}
        self.models_dir = models_dir
        self.default_model = default_model
        self.executor = executor
        self._config, self._observers = config, observers
        self._keys = itertools.count(1)
        self._locks: dict[str, asyncio.Lock] = {}
        self._loading: set[str] = set()
        self._last_failure: dict[str, str] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self.stamps: dict[str, Stamp] = {}  # each model folder's files when it was last loaded or tried (live reload)

    @property
    def process(self) -> ModelProcess | None:
        return self.executor if isinstance(self.executor, ModelProcess) else None

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
        return not self.executor.ready

    @property
    def unavailable(self) -> dict[str, str]:
        """The models that failed to load (not those unloaded on request), and why."""
        return {n: m.error or "not loaded" for n, m in self.models.items() if not m.available and not m.unloaded}

    async def index(self, *, ready_only: bool = False) -> list[ModelState]:
        """Every model of the repository (the manifest as it is now, and those serving) and its state."""
        try:
            listed = [entry.name for entry in (await anyio.to_thread.run_sync(read_manifest, self.models_dir)).models]
        except (OSError, ValidationError):
            listed = []
        states = [self.state(name) for name in dict.fromkeys([*self.models, *listed])]
        return [s for s in states if s.state == "READY"] if ready_only else states

    def state(self, name: str) -> ModelState:
        model = self.models.get(name)
        version = model.card.version if model is not None and model.card is not None else None
        if name in self._loading:
            serving = f"; version {version} serves until then" if model is not None and model.available else ""
            return ModelState(name, version, "LOADING", f"loading{serving}")
        if model is None:
            return ModelState(name, None, "UNAVAILABLE", "not loaded")
        if not model.available:
            return ModelState(name, version, "UNAVAILABLE", model.error or "not loaded")
        failure = self._last_failure.get(name)
        return ModelState(name, version, "READY", f"the last load failed: {failure}" if failure else "")

    async def load(self, name: str) -> LoadedModel:
        """Read the model's folder again, check card, checksum and graph, warm it up, then serve it instead of the
        version serving now, whose calls in flight finish on it. ModelLoadFailed (the old version still serves)."""
        async with self._locks.setdefault(name, asyncio.Lock()):
            folder = await self._folder(name)
            self._loading.add(name)
            try:
                model = await self._open(name, folder)
            except LOAD_ERRORS as exc:
                raise self._failed(name, first_line(exc)) from exc
            finally:
                self._loading.discard(name)
            self._last_failure.pop(name, None)
            self._observers.load(name, True)
            self._serve(model)
            return model

    async def unload(self, name: str) -> None:
        """Stop serving the model (its calls in flight finish); refused for the default model."""
        async with self._locks.setdefault(name, asyncio.Lock()):
            old = self.models.get(name)
            if old is None:
                raise UnknownModel(name, self.models)
            if name == self.default_model:
                raise DefaultModelRequired(
                    f"Model {name!r} is the default model (MNIST_DEFAULT_MODEL): it cannot be unloaded; load it again "
                    "to replace it, or restart with another default."
                )
            self._serve(LoadedModel(name=name, card=old.card, error="unloaded", unloaded=True))

    async def close(self) -> None:
        for task in self._retiring:
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        for model in self.models.values():
            if model.batcher is not None:
                await model.batcher.close()
        self.executor.close()  # on the event loop: calls still waiting there fail first

    async def opened_or_failed(self, name: str, folder: Path) -> LoadedModel:
        """The model, or its failure recorded (not raised): how start-up loads each model."""
        try:
            model = await self._open(name, folder)
        except LOAD_ERRORS as exc:
            log.error("model %s is unavailable: %s", name, first_line(exc))
            self._observers.load(name, False)
            return LoadedModel(name=name, error=first_line(exc))
        self._observers.load(name, True)
        return model

    async def _folder(self, name: str) -> Path:
        """The model's folder, as the manifest names it now."""
        try:
            manifest = await anyio.to_thread.run_sync(read_manifest, self.models_dir)
        except LOAD_ERRORS as exc:
            raise self._failed(name, f"cannot read {self.models_dir}/manifest.json: {first_line(exc)}") from exc
        entry = next((e for e in manifest.models if e.name == name), None)
        if entry is None:
            raise UnknownModel(name, [e.name for e in manifest.models])
        return self.models_dir / entry.path

    async def _open(self, name: str, folder: Path) -> LoadedModel:
        """Card and checksum read here, graph checked and warmed up by the executor, where the session will run."""
        self.stamps[name] = await anyio.to_thread.run_sync(folder_stamp, folder)  # before the files are read
        card, path = await anyio.to_thread.run_sync(verified_card, folder)
        key = f"{name}#{next(self._keys)}"
        providers = await self.executor.open(key, path, card)
        options = session_options(self._config.intra_op_threads, self._config.inter_op_threads)
        model = LoadedModel(
            name=name,
            card=card,
            key=key,
            executor=self.executor,
            providers=providers,
            open_explainer=functools.partial(open_explainer, folder, card, providers, options),
            open_pair_reader=functools.partial(open_pair_reader, folder, card, providers, options),
            open_line_reader=functools.partial(open_line_reader, folder, card, providers, options),
            revision=card.file_sha256[:12],
            loaded_at=time.time(),
            observe_run=self._observers.inference(name),
        )
        if self._config.batching:
            model.batcher = Batcher(
                model.call,
                max_batch=self._config.max_batch_size,
                max_delay_s=self._config.batch_delay_ms / 1000,
                observe=self._observers.batch(name),
            )
        log.info("model %s v%s (%s) loaded on %s", name, card.version, model.revision, ", ".join(providers))
        return model

    def _failed(self, name: str, reason: str) -> ModelLoadFailed:
        """The error a failed load answers; the version serving, if any, goes on serving."""
        log.error("model %s failed to load: %s", name, reason)
        self._last_failure[name] = reason
        self._observers.load(name, False)
        old = self.models.get(name)
        if old is None:
            self.models[name] = LoadedModel(name=name, error=reason)
        serving = f"; version {old.card.version} ({old.revision}) still serves" if old and old.available else ""
        return ModelLoadFailed(f"Model {name!r} failed to load: {reason}{serving}.")

    def _serve(self, model: LoadedModel) -> None:
        """Swap the model in (one dict assignment: the next request gets it), and retire the one it replaces."""
        old = self.models.get(model.name)
        self.models[model.name] = model
        self._observers.serving(model.name, model.card.version if model.available else None, model.revision)
        if old is not None and old.available:
            old.retire(lambda: self.get(model.name))
            task = asyncio.create_task(old.close_when_idle())
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)


async def start_executor(config: RuntimeConfig, providers: list[str]) -> Executor:
    """A model process when asked for and the models run on CPU; else (or if it cannot start) worker threads."""
    if config.model_process and providers == [CPU]:
        process = ModelProcess(providers, config.intra_op_threads, config.inter_op_threads)
        process.start()
        try:
            await process.started()
        except ModelProcessLost as exc:
            log.error("%s: calling the models from worker threads instead", exc)
            process.close()
        else:
            return process
    return InThreads(providers, session_options(config.intra_op_threads, config.inter_op_threads))


async def load_registry(
    models_dir: Path, *, default_model: str, config: RuntimeConfig, observers: Observers | None = None
) -> Registry:
    """Every model in the manifest; raises StartupError when the default model is not among the loaded ones."""
    try:
        manifest = read_manifest(models_dir)
    except (OSError, ValidationError) as exc:
        raise StartupError(f"cannot read {models_dir}/manifest.json: {first_line(exc)}") from exc
    try:
        providers = requested_providers(config.provider, strict=config.strict_provider)
    except ModelLoadError as exc:
        raise StartupError(str(exc)) from exc
    observers = observers or Observers(inference=lambda _: _ignore, batch=lambda _: _ignore)
    registry = Registry(models_dir, default_model, await start_executor(config, providers), config, observers)
    for entry in manifest.models:
        registry.models[entry.name] = model = await registry.opened_or_failed(entry.name, models_dir / entry.path)
        if model.available:
            observers.serving(entry.name, model.card.version if model.card else None, model.revision)
    default = registry.models.get(default_model)
    if default is None or not default.available:
        await registry.close()
        reason = default.error if default else f"not in the manifest (models: {', '.join(registry.models)})"
        raise StartupError(f"default model {default_model!r} cannot be served: {reason}")
    return registry
