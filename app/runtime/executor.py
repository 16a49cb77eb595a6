"""Where the models run: one interface, two implementations.

`InThreads` holds each session in this process and calls it from a worker thread; `app.runtime.process.ModelProcess`
holds them in a child process. The registry opens, calls and closes sessions by key through either, so this process
holds a session only when it is the one that runs it. A key names one load of one model (`cnn#3`): a reload opens the
new version under a new key while the old one still answers the calls already made to it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import anyio.to_thread
import onnxruntime as ort

from app.cards import INPUT_NAME, ModelCard
from app.runtime.messages import Images, Outputs
from app.runtime.session import open_checked_session


class Executor(Protocol):
    """Opens, calls and closes ONNX Runtime sessions, each under a key."""

    @property
    def ready(self) -> bool:
        """Calls can run now (false while a model process is being replaced)."""

    async def open(self, key: str, path: Path, card: ModelCard) -> list[str]:
        """Open, check against the card and warm up the model under `key`; its providers. ModelLoadError if not."""

    async def run(self, key: str, images: Images, outputs: Sequence[str]) -> tuple[Outputs, float]:
        """The named outputs of one call, and the seconds ONNX Runtime took."""

    async def close_model(self, key: str) -> None:
        """Drop the session under `key`; calls made to it before have been answered."""

    def close(self) -> None:
        """Drop every session (and stop the process, if there is one)."""


def run_session(session: ort.InferenceSession, images: Images, outputs: Sequence[str]) -> tuple[Outputs, float]:
    """(N, 28, 28, 1) float32 in [0, 1] -> the named outputs, and the seconds the call took."""
    names = list(outputs)
    start = time.perf_counter()
    values = session.run(names, {INPUT_NAME: images})
    return dict(zip(names, values, strict=True)), time.perf_counter() - start


class InThreads:
    """Sessions in this process, called from worker threads (anyio's pool)."""

    def __init__(self, providers: Sequence[str], options: ort.SessionOptions) -> None:
        self._providers = list(providers)
        self._options = options
        self._sessions: dict[str, ort.InferenceSession] = {}

    @property
    def ready(self) -> bool:
        return True

    async def open(self, key: str, path: Path, card: ModelCard) -> list[str]:
        session = await anyio.to_thread.run_sync(open_checked_session, path, self._providers, self._options, card)
        self._sessions[key] = session
        providers: list[str] = session.get_providers()
        return providers

    async def run(self, key: str, images: Images, outputs: Sequence[str]) -> tuple[Outputs, float]:
        # A timed-out request stops waiting at once; the thread finishes its call and its result is dropped.
        session = self._sessions[key]
        return await anyio.to_thread.run_sync(run_session, session, images, outputs, abandon_on_cancel=True)

    async def close_model(self, key: str) -> None:
        self._sessions.pop(key, None)  # a call still running holds its own reference

    def close(self) -> None:
        self._sessions.clear()
