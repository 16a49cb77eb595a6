"""Fixtures shared by every test: the shipped MNIST sample, and no MNIST_* variables leaking in."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.helpers import SAMPLE_DIR
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
