"""Fixtures shared by every test: the shipped MNIST sample, no MNIST_* variables leaking in, and the service
(an app per settings on the bundled models, with its lifespan run; or the real process on a free port)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
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


@pytest.fixture(scope="session")
def live_server() -> Iterator[str]:
    """The service as users run it (`python -m app`), on a free port of 127.0.0.1; stopped after the tests."""
    port = free_port()
    env = {**os.environ, "MNIST_MODELS_DIR": str(MODELS_DIR), "MNIST_PORT": str(port), "MNIST_LOG_LEVEL": "warning"}
    process = subprocess.Popen([sys.executable, "-m", "app"], env=env, cwd=MODELS_DIR.parent)
    url = f"127.0.0.1:{port}"
    try:
        wait_until_ready(f"http://{url}/health/ready", process, timeout_s=60)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} was not ready within {timeout_s} s")
