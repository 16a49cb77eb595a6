"""Loading faults: a broken model is unavailable and said so; a broken default model stops start-up."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app, runtime_config
from app.runtime.registry import Registry, RuntimeConfig, StartupError, load_registry
from app.runtime.session import requested_providers
from app.settings import Settings
from tests.helpers import MODELS_DIR, encode
from training.data import Mnist


def config(**settings: object) -> RuntimeConfig:
    """The runtime configuration of these settings (their defaults: Settings'), models in worker threads."""
    return runtime_config(Settings(**{"model_process": False, **settings}))  # type: ignore[arg-type]


def loaded(models_dir: Path, default_model: str, **settings: object) -> Registry:
    return asyncio.run(load_registry(models_dir, default_model=default_model, config=config(**settings)))


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """A copy of the two linear models, with svm as the default."""
    target = tmp_path / "models"
    for name in ("svm", "softmax"):
        shutil.copytree(MODELS_DIR / name, target / name, ignore=shutil.ignore_patterns("figures"))
    (target / "manifest.json").write_text(
        '{"default_model": "svm", "models": [{"name": "svm", "path": "svm"}, {"name": "softmax", "path": "softmax"}]}'
    )
    return target


def test_loads_every_model_in_the_manifest(models_dir: Path) -> None:
    registry = loaded(models_dir, "svm", provider="cpu")
    assert list(registry.models) == ["svm", "softmax"]
    assert registry.unavailable == {}
    model = registry.get("softmax")
    outputs = asyncio.run(model.infer(np.zeros((3, 28, 28, 1), np.float32), ["probabilities", "evidence"]))
    assert outputs["probabilities"].shape == (3, 10)
    assert outputs["evidence"].shape == (3, 10, 28, 28)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda p: p.unlink(), "is missing"),
        (lambda p: p.write_bytes(b"garbage"), "does not match the checksum"),
        (lambda p: p.write_bytes(p.read_bytes()[:1000]), "does not match the checksum"),
    ],
)
def test_a_broken_model_is_unavailable_and_the_others_serve(
    models_dir: Path, damage, reason: str, caplog: pytest.LogCaptureFixture, mnist_sample: Mnist
) -> None:
    damage(models_dir / "softmax" / "model.onnx")
    with (
        caplog.at_level(logging.ERROR),
        TestClient(create_app(Settings(models_dir=models_dir, default_model="svm"))) as client,
    ):
        assert "model softmax is unavailable" in caplog.text
        assert reason in caplog.text
        models = {m["name"]: m for m in client.get("/models").json()}
        assert models["softmax"]["status"] == "unavailable"
        assert reason in models["softmax"]["error"]
        ready = client.get("/health/ready").json()
        assert ready["status"] == "degraded"
        assert ready["models"]["softmax"].startswith("unavailable")
        response = client.post("/predict?model=softmax", files={"file": encode(mnist_sample.test.images[0])})
        assert response.status_code == 503
        assert response.json()["code"] == "model_unavailable"
        assert client.post("/predict?model=svm", files={"file": encode(mnist_sample.test.images[0])}).status_code == 200


def test_a_card_that_does_not_validate_makes_the_model_unavailable(models_dir: Path) -> None:
    (models_dir / "softmax" / "card.json").write_text('{"name": "softmax"}')
    registry = loaded(models_dir, "svm")
    assert "validation error" in registry.unavailable["softmax"]


def test_a_broken_default_model_stops_start_up_with_one_line(models_dir: Path) -> None:
    (models_dir / "svm" / "model.onnx").write_bytes(b"garbage")
    with pytest.raises(StartupError, match=r"^default model 'svm' cannot be served: .*checksum"):
        loaded(models_dir, "svm")


def test_an_unlisted_default_model_stops_start_up(models_dir: Path) -> None:
    with pytest.raises(StartupError, match="'cnn' cannot be served: not in the manifest"):
        loaded(models_dir, "cnn")


def test_a_missing_manifest_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match=r"cannot read .*manifest.json"):
        loaded(tmp_path, "cnn")


def test_cuda_without_a_gpu_falls_back_to_cpu_with_a_warning(
    caplog: pytest.LogCaptureFixture, models_dir: Path
) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has a CUDA build of onnxruntime")
    with caplog.at_level(logging.WARNING):
        assert requested_providers("cuda") == ["CPUExecutionProvider"]
        registry = loaded(models_dir, "svm", provider="cuda")
    assert "falling back to CPU" in caplog.text
    assert registry.get().providers == ["CPUExecutionProvider"]
