"""Live reload (MNIST_WATCH_MODELS): each model's folder is polled, and a model whose files changed is loaded again
once they have stopped changing.

Polling the size and modification time of card.json and the ONNX files, not inotify (watchfiles): it sees changes
on every filesystem a model folder may live on (a Kubernetes volume whose files are swapped by symlink, NFS), costs
a few stat calls a second, and needs nothing more than the standard library.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import anyio.to_thread
from pydantic import ValidationError

from app.cards import read_manifest
from app.errors import ServiceError
from app.runtime.model import Stamp, folder_stamp
from app.runtime.registry import Registry

log = logging.getLogger(__name__)


def repository_stamps(models_dir: Path) -> dict[str, Stamp]:
    """Each model of the manifest (as it is now) and its folder's stamp."""
    try:
        entries = read_manifest(models_dir).models
    except (OSError, ValidationError):  # being rewritten: the next poll reads it
        return {}
    return {entry.name: folder_stamp(models_dir / entry.path) for entry in entries}


class Watcher:
    """Loads a model again once its folder's stamp differs from the one it was loaded with and has held for one poll
    (a file still being written changes between polls: no load is tried on half a model)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.loaded = registry.stamps  # the stamp each model's folder had when it was last loaded (or tried)
        self.seen: dict[str, Stamp] = dict(self.loaded)  # the stamp at the previous poll

    async def poll(self, stamps: dict[str, Stamp]) -> list[str]:
        """Reload what changed and has settled; the names it tried to load."""
        tried = []
        for name, stamp in stamps.items():
            settled = stamp == self.seen.get(name) and stamp != self.loaded.get(name)
            self.seen[name] = stamp
            model = self.registry.models.get(name)
            if model is not None and model.unloaded:  # unloaded on request: a change of its files does not load it
                continue
            if settled:
                tried.append(name)
                await self._load(name)
        return tried

    async def _load(self, name: str) -> None:
        try:
            model = await self.registry.load(name)
        except ServiceError as exc:
            log.error("live reload of %s failed: %s", name, exc.detail)
            return
        log.info("live reload: %s v%s (%s) serves", name, model.card.version if model.card else "?", model.revision)


async def watch_models(registry: Registry, interval_s: float) -> None:
    """Poll the repository every `interval_s` until cancelled."""
    watcher = Watcher(registry)
    log.info("watching %s for model changes every %g s", registry.models_dir, interval_s)
    while True:
        await asyncio.sleep(interval_s)
        await watcher.poll(await anyio.to_thread.run_sync(repository_stamps, registry.models_dir))
