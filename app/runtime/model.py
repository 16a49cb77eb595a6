"""One model as it serves: its card, the key of its session in an Executor, its batcher; replaced whole by a reload."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import onnxruntime as ort

from app.cards import CARD_FILE, ModelCard, read_card
from app.errors import ModelRestarting, ModelUnavailable, UnknownLayer
from app.runtime.batcher import Batcher, Observer
from app.runtime.executor import Executor
from app.runtime.messages import Images, Outputs
from app.runtime.process import ModelProcessLost
from app.runtime.session import ModelLoadError

State = Literal["READY", "UNAVAILABLE", "LOADING"]
Stamp = tuple[tuple[str, int, int], ...]  # (file name, size, mtime in ns) of each watched file


def folder_stamp(folder: Path) -> Stamp:
    """What changes when a model's files are written: card.json and every .onnx file, with size and mtime."""
    stamps = []
    for path in sorted(folder.glob("*")):
        if path.name == CARD_FILE or path.suffix == ".onnx":
            try:
                stat = path.stat()
            except OSError:  # deleted between the listing and the stat
                continue
            stamps.append((path.name, stat.st_size, stat.st_mtime_ns))
    return tuple(stamps)


@dataclass(frozen=True)
class ModelState:
    """One entry of the repository index, as Triton's extension names it."""

    name: str
    version: str | None
    state: State
    reason: str


@dataclass(eq=False)
class LoadedModel:
    """One model from the manifest: its card and the key of its session, unless loading failed (then `error` says
    why). A reload makes a new LoadedModel; the old one answers the requests that already hold it, then closes."""

    name: str
    card: ModelCard | None = None
    key: str | None = None  # its session in the executor
    executor: Executor | None = None
    providers: list[str] = field(default_factory=list)
    error: str | None = None
    revision: str | None = None  # the first 12 hex digits of the model file's SHA-256
    loaded_at: float | None = None  # Unix time the version started serving
    batcher: Batcher | None = None
    observe_run: Observer | None = None  # (images, seconds) of each ONNX Runtime call
    # Open explain.onnx (app.runtime.explainer), pair.onnx (app.runtime.pair_reader) and line.onnx
    # (app.runtime.line_reader) in this process, wherever the model runs: explanations and /read call them here
    open_explainer: Callable[[], ort.InferenceSession | None] | None = None
    open_pair_reader: Callable[[], ort.InferenceSession | None] | None = None
    open_line_reader: Callable[[], ort.InferenceSession | None] | None = None
    unloaded: bool = False  # unloaded on request, not failed
    _in_flight: int = 0
    _idle: asyncio.Event | None = None
    _successor: Callable[[], LoadedModel] | None = None  # set once a newer version (or none) replaces it
    _explainer: ort.InferenceSession | None = None
    _pair_reader: ort.InferenceSession | None = None
    _line_reader: ort.InferenceSession | None = None

    @property
    def explainer(self) -> ort.InferenceSession | None:
        """explain.onnx's session, opened at the first explanation (tens of ms, once): a worker that never explains
        holds no session of it. A file that cannot be used is tried, and logged, once."""
        if self.open_explainer is not None:
            self._explainer, self.open_explainer = self.open_explainer(), None
        return self._explainer

    @property
    def pair_reader(self) -> ort.InferenceSession | None:
        """pair.onnx's session, opened at the first /read, as the explainer is at the first explanation."""
        if self.open_pair_reader is not None:
            self._pair_reader, self.open_pair_reader = self.open_pair_reader(), None
        return self._pair_reader

    @property
    def line_reader(self) -> ort.InferenceSession | None:
        """line.onnx's session, opened at the first /read, as the pair reader is."""
        if self.open_line_reader is not None:
            self._line_reader, self.open_line_reader = self.open_line_reader(), None
        return self._line_reader

    @property
    def available(self) -> bool:
        return self.key is not None and self.card is not None

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

    async def infer(self, images: Images, outputs: Sequence[str]) -> Outputs:
        """The named outputs, off the event loop (health checks keep answering): batched with concurrent requests,
        if enabled. A request that got this version before a reload and calls it after is served by the new one."""
        if self._successor is not None:
            return await self._successor().infer(images, outputs)
        self._in_flight += 1
        try:
            if self.batcher is not None:
                return await self.batcher.infer(images, outputs)
            return await self.call(images, outputs)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0 and self._idle is not None:
                self._idle.set()

    async def call(self, images: Images, outputs: Sequence[str]) -> Outputs:
        """One model call, where the executor runs it."""
        if self.executor is None or self.key is None:
            raise ModelUnavailable(f"Model {self.name!r} is unavailable: {self.error}")
        try:
            values, seconds = await self.executor.run(self.key, images, outputs)
        except ModelProcessLost as exc:
            raise ModelRestarting(f"Model {self.name!r} is unavailable for now ({exc}); try again.") from exc
        if self.observe_run is not None:
            self.observe_run(len(images), seconds)
        return values

    def retire(self, successor: Callable[[], LoadedModel]) -> None:
        """From now on, calls go to `successor()` (the version that replaced this one, or an error)."""
        self._successor = successor

    async def close_when_idle(self) -> None:
        """Once the calls in flight are answered, close the batcher and the session."""
        if self._in_flight:
            self._idle = asyncio.Event()
            await self._idle.wait()
        if self.batcher is not None:
            await self.batcher.close()
        if self.executor is not None and self.key is not None:
            await self.executor.close_model(self.key)


def verified_card(folder: Path) -> tuple[ModelCard, Path]:
    """The folder's card and model file, whose checksum matches the card's; ModelLoadError, OSError or
    ValidationError if not."""
    card = read_card(folder)
    path = folder / card.file
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing")
    if hashlib.sha256(path.read_bytes()).hexdigest() != card.file_sha256:
        raise ModelLoadError(f"{path} does not match the checksum in its card (corrupt or replaced)")
    return card, path
