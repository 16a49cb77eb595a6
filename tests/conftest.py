"""Fixtures shared by every test: the shipped MNIST sample, no MNIST_* variables leaking in, and the service
(an app per settings on the bundled models, with its lifespan run; or the real process on a free port)."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from benchmarks.bench import serve
from tests.helpers import MODELS_DIR, SAMPLE_DIR
from training.data import Mnist, load_mnist


@pytest.fixture(autouse=True)
def clean_environ() -> Iterator[None]:
    saved = {k: v for k, v in os.environ.items() if k.startswith("MNIST_") or k == "PORT"}
    for key in saved:
        del os.environ[key]
    yield
    os.environ.update(saved)


@pytest.fixture(scope="session")
def mnist_sample() -> Mnist:
    """600 training and 300 test images of MNIST, shipped under tests/data."""
    return load_mnist(SAMPLE_DIR, verify=False, validation_size=100)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings(models_dir=MODELS_DIR, max_upload_bytes=2_000_000, max_batch_images=8)


@pytest.fixture(scope="session")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


SERVICE = [sys.executable, "-m", "app"]


def service_env(port: int) -> dict[str, str]:
    """Settings for `python -m app` on the bundled models and a given port."""
    return {
        "MNIST_MODELS_DIR": str(MODELS_DIR),
        "MNIST_PORT": str(port),
        "MNIST_GRPC_PORT": "0",  # a test that drives gRPC picks a free port of its own
        "MNIST_LOG_LEVEL": "warning",
    }


@pytest.fixture(scope="session")
def live_server() -> Iterator[str]:
    """The service as users run it (`python -m app`), on a free port of 127.0.0.1; stopped after the tests."""
    port = free_port()
    with serve(SERVICE, f"http://127.0.0.1:{port}/health/ready", service_env(port)):
        yield f"127.0.0.1:{port}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
