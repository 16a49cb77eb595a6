from __future__ import annotations

import inspect
from dataclasses import MISSING, fields
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.cpus import CpuShare
from app.main import runtime_config
from app.preprocess import Limits
from app.runtime.batcher import Batcher
from app.runtime.registry import RuntimeConfig
from app.settings import Settings


def test_defaults_serve_the_bundled_models() -> None:
    settings = Settings()
    assert settings.models_dir == Path("models")
    assert settings.default_model == "cnn"
    assert settings.provider == "auto"
    assert settings.max_upload_bytes == 10_000_000
    assert settings.port == 8000


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MNIST_DEFAULT_MODEL", "lenet")
    monkeypatch.setenv("MNIST_PROVIDER", "cpu")
    monkeypatch.setenv("PORT", "9001")
    settings = Settings()
    assert (settings.default_model, settings.provider, settings.port) == ("lenet", "cpu", 9001)


def test_mnist_port_wins_over_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9001")
    monkeypatch.setenv("MNIST_PORT", "9002")
    assert Settings().port == 9002


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MNIST_PROVIDER", "tpu")
    with pytest.raises(ValidationError, match="provider"):
        Settings()


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"MNIST_{name.upper()}" in readme, name


@pytest.mark.parametrize(
    ("workers", "model_process", "expected"),
    [
        (1, True, (True, 1)),  # the event loop on one core, the model on the other
        (2, True, (False, 1)),  # a core a worker: the workers keep both busy
        (1, False, (False, 2)),  # explicit: ONNX Runtime's own default would be the node's cores
    ],
)
def test_the_model_process_and_its_threads_follow_the_cores(
    workers: int, model_process: bool, expected: tuple[bool, int]
) -> None:
    share = CpuShare(cores=2, affinity=2, quota=None)
    config = runtime_config(Settings(workers=workers, model_process=model_process), share)
    assert (config.model_process, config.intra_op_threads) == expected


def test_threads_follow_the_container_quota_not_the_node() -> None:
    # A 64-core node, a pod limited to 2 CPUs: one thread for the model beside the event loop, not 63.
    config = runtime_config(Settings(), CpuShare(cores=64, affinity=64, quota=2.0))
    assert (config.model_process, config.intra_op_threads) == (True, 1)
    config = runtime_config(Settings(model_process=False), CpuShare(cores=64, affinity=64, quota=2.0))
    assert config.intra_op_threads == 2


def test_the_runtime_takes_every_value_from_settings() -> None:
    """RuntimeConfig and Batcher have no defaults of their own (one used to disagree: a 2 ms batch delay against the
    service's 0), so a setting has one source: Settings."""
    assert all(f.default is MISSING and f.default_factory is MISSING for f in fields(RuntimeConfig))
    batcher = inspect.signature(Batcher).parameters
    assert batcher["max_batch"].default is batcher["max_delay_s"].default is inspect.Parameter.empty
    settings = Settings(model_process=False)
    config = runtime_config(settings, CpuShare(cores=2, affinity=2, quota=None))
    assert (config.max_batch_size, config.batch_delay_ms, config.batching) == (
        settings.max_batch_size,
        settings.batch_delay_ms,
        settings.batching,
    )


def test_the_defaults_kept_outside_settings_agree_with_it() -> None:
    """preprocess.Limits keeps a default so that preprocess(data) runs on its own (tests, benchmarks): the service's."""
    assert Limits().max_pixels == Settings().max_image_pixels
