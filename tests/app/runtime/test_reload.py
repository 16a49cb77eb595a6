"""Registry.load and unload: a request that holds the old version finishes on it, a request that got it before the
swap and calls it after is served by the new one, the old session is then closed; and the live-reload watcher loads
a model once its changed files have held still, once per change."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.errors import ModelLoadFailed, ModelUnavailable
from app.main import create_app, runtime_config
from app.runtime.executor import InThreads
from app.runtime.registry import Registry, load_registry
from app.runtime.watcher import Watcher, repository_stamps
from app.settings import Settings
from tests.helpers import MODELS_DIR


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    for name in ("svm", "softmax"):
        shutil.copytree(MODELS_DIR / name, tmp_path / name, ignore=shutil.ignore_patterns("figures", "*.md"))
    manifest = {"default_model": "svm", "models": [{"name": n, "path": n} for n in ("svm", "softmax")]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    return tmp_path


def set_version(folder: Path, version: str) -> None:
    card = json.loads((folder / "card.json").read_text())
    (folder / "card.json").write_text(json.dumps({**card, "version": version}))


async def registry_of(models_dir: Path) -> Registry:
    config = runtime_config(Settings(model_process=False, batching=False))
    return await load_registry(models_dir, default_model="svm", config=config)


def sessions(registry: Registry) -> set[str]:
    assert isinstance(registry.executor, InThreads)
    return set(registry.executor._sessions)


def test_the_old_version_finishes_its_calls_then_closes(models_dir: Path) -> None:
    async def scenario() -> None:
        registry = await registry_of(models_dir)
        old = registry.get("softmax")
        many = np.zeros((20000, 28, 28, 1), np.float32)
        in_flight = asyncio.ensure_future(old.infer(many, ["probabilities"]))
        await asyncio.sleep(0.01)  # the call is running in its thread
        set_version(models_dir / "softmax", "2")
        new = await registry.load("softmax")
        assert registry.get("softmax") is new
        assert old.key in sessions(registry)  # still answering
        assert (await in_flight)["probabilities"].shape == (20000, 10)
        await asyncio.sleep(0.01)  # the old version retires once idle
        assert old.key not in sessions(registry)
        assert new.key in sessions(registry)
        # A request that took the old version before the swap and calls it only now is served by the new one.
        assert (await old.infer(many[:2], ["probabilities"]))["probabilities"].shape == (2, 10)
        assert new.card is not None
        assert new.card.version == "2"
        await registry.close()

    asyncio.run(scenario())


def test_a_failed_load_keeps_the_old_version(models_dir: Path) -> None:
    async def scenario() -> None:
        registry = await registry_of(models_dir)
        old = registry.get("softmax")
        (models_dir / "softmax" / "model.onnx").write_bytes(b"not onnx")
        with pytest.raises(ModelLoadFailed, match=r"checksum.*version 1 \(\w{12}\) still serves"):
            await registry.load("softmax")
        assert registry.get("softmax") is old
        assert sessions(registry) == {registry.get("svm").key, old.key}
        assert registry.state("softmax").reason.startswith("the last load failed: ")
        await registry.close()

    asyncio.run(scenario())


def test_a_graph_that_does_not_match_its_card_is_refused(models_dir: Path) -> None:
    """A card whose file checks out but lists an output the graph lacks: refused when the graph is opened."""
    card = json.loads((models_dir / "softmax" / "card.json").read_text())
    card["outputs"].append({**card["outputs"][0], "name": "no_such_output"})
    (models_dir / "softmax" / "card.json").write_text(json.dumps(card))

    async def scenario() -> None:
        registry = await registry_of(models_dir)
        assert "lacks the outputs ['no_such_output']" in registry.unavailable["softmax"]
        await registry.close()

    asyncio.run(scenario())


def test_unload_and_the_default_model(models_dir: Path) -> None:
    async def scenario() -> None:
        registry = await registry_of(models_dir)
        old = registry.get("softmax")
        await registry.unload("softmax")
        with pytest.raises(ModelUnavailable, match="unloaded"):
            registry.get("softmax")
        with pytest.raises(ModelUnavailable, match="unloaded"):  # a request that held it before
            await old.infer(np.zeros((1, 28, 28, 1), np.float32), ["probabilities"])
        await asyncio.sleep(0.01)
        assert sessions(registry) == {registry.get("svm").key}
        assert registry.unavailable == {}  # unloaded on request is not a failure: readiness stays "ready"
        await registry.load("softmax")
        assert registry.get("softmax").available
        await registry.close()

    asyncio.run(scenario())


def test_the_watcher_loads_a_changed_model_once_its_files_hold_still(models_dir: Path) -> None:
    async def scenario() -> None:
        registry = await registry_of(models_dir)
        watcher = Watcher(registry)
        assert await watcher.poll(repository_stamps(models_dir)) == []  # nothing changed
        set_version(models_dir / "softmax", "2")
        assert await watcher.poll(repository_stamps(models_dir)) == []  # changed: may still be being written
        assert await watcher.poll(repository_stamps(models_dir)) == ["softmax"]  # held still: loaded
        assert registry.get("softmax").card.version == "2"  # type: ignore[union-attr]
        (models_dir / "softmax" / "model.onnx").write_bytes(b"half a model")
        await watcher.poll(repository_stamps(models_dir))
        assert await watcher.poll(repository_stamps(models_dir)) == ["softmax"]  # tried, failed
        assert registry.get("softmax").card.version == "2"  # type: ignore[union-attr]  # still serving
        assert await watcher.poll(repository_stamps(models_dir)) == []  # not tried again until it changes again
        await registry.close()

    asyncio.run(scenario())


def test_watch_models_reloads_in_the_running_service(models_dir: Path) -> None:
    settings = Settings(models_dir=models_dir, default_model="svm", watch_models=True, watch_interval_s=0.05)
    with TestClient(create_app(settings)) as client:
        set_version(models_dir / "softmax", "7")
        for _ in range(200):  # polls every 50 ms; loads after two equal polls
            versions = {m["name"]: m["version"] for m in client.get("/models").json()}
            if versions["softmax"] == "7":
                break
            asyncio.run(asyncio.sleep(0.05))
        assert versions == {"svm": "1", "softmax": "7"}
