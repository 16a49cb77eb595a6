"""Deployment smoke test, run where a Docker engine answers (on these machines: ../shared/tools/docker-testbed.sh up).

Builds the image, `docker-compose up -d`, waits for healthy, classifies a digit, fetches its activations; then
scales to two replicas behind nginx and checks that both serve, and that one answers the other's activations_url.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import pytest

from tests.helpers import ROOT, encode
from training.data import Mnist

PROJECT = "mnistsmoke"
IMAGE_BUDGET_MB = 250


def docker_available() -> bool:
    if not shutil.which("docker") or not shutil.which("docker-compose"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(not docker_available(), reason="no Docker engine: run ../shared/tools/docker-testbed.sh up"),
]


def compose(*args: str, timeout: int = 900) -> str:
    command = ["docker-compose", "-p", PROJECT, *args]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def request(url: str, data: bytes | None = None, content_type: str = "image/png") -> tuple[dict, dict[str, str]]:
    headers = {"Content-Type": content_type} if data is not None else {}
    with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=30) as response:
        return json.loads(response.read()), dict(response.headers)


def wait_for(url: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            request(url)
            return
        except OSError:
            time.sleep(1)
    raise TimeoutError(url)


def wait_healthy(service: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ids = compose("ps", "-q", service).split()
        states = [
            subprocess.run(
                ["docker", "inspect", "-f", "{{.State.Health.Status}}", i], capture_output=True, text=True
            ).stdout.strip()
            for i in ids
        ]
        if ids and all(s == "healthy" for s in states):
            return
        time.sleep(2)
    raise TimeoutError(f"{service} not healthy: {states}")


@pytest.fixture(scope="module")
def deployment() -> Iterator[None]:
    build = subprocess.run(
        ["docker", "build", "--network", "host", "-t", "mnist-serve:latest", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    try:
        yield
    finally:
        compose("--profile", "scale", "down", "--remove-orphans", "-t", "20")


def image_growth_mb() -> float:
    sizes = {}
    for image in ("mnist-serve:latest", "python:3.11-slim"):
        out = subprocess.run(["docker", "image", "inspect", "-f", "{{.Size}}", image], capture_output=True, text=True)
        sizes[image] = int(out.stdout.strip()) / 1e6
    return sizes["mnist-serve:latest"] - sizes["python:3.11-slim"]


def test_image_adds_at_most_250_mb(deployment: None, record_property: pytest.RecordProperty) -> None:
    growth = image_growth_mb()
    record_property("image_growth_mb", round(growth))
    assert growth <= IMAGE_BUDGET_MB, f"the image adds {growth:.0f} MB to its base"


def test_compose_up_serves_predictions_and_activations(deployment: None, mnist_sample: Mnist) -> None:
    compose("up", "-d", "api")
    wait_healthy("api")
    prediction, _ = request("http://127.0.0.1:8000/predict", encode(mnist_sample.test.images[0]))
    assert prediction["digit"] == 7
    activations, _ = request(prediction["activations_url"] + "&layer=conv1")
    assert activations["layers"][0]["shape"] == [32, 28, 28]
    compose("stop", "-t", "20", "api")


def test_replicas_behind_the_load_balancer(deployment: None, mnist_sample: Mnist) -> None:
    compose("--profile", "scale", "up", "-d", "--build", "--scale", "replica=2", "lb")
    wait_healthy("replica")
    wait_for("http://127.0.0.1:8080/health/ready")
    upstreams, urls = set(), []
    for image in mnist_sample.test.images[:20]:
        prediction, headers = request("http://127.0.0.1:8080/predict", encode(image))
        upstreams.add(headers["X-Upstream"])
        urls.append(prediction["activations_url"].replace("://127.0.0.1:8080", "://127.0.0.1:8080"))
    assert len(upstreams) == 2, upstreams
    # Whichever replica answers, every activations_url works: the token carries the image.
    for url in urls[:6]:
        activations, _ = request(url)
        assert activations["model"] == "cnn"
