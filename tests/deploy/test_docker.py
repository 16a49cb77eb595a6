"""Deployment smoke test, run where a Docker engine answers (on these machines: ../shared/tools/docker-testbed.sh up).

Builds the images, `docker-compose up -d`, waits for healthy, classifies a digit, fetches its activations; then
scales to two replicas behind nginx: both serve, one answers the other's activations_url, nginx keeps the replicas'
addresses and its version to itself, answers oversize bodies with the service's JSON 413, and sets the forwarded
scheme itself; finally one replica is stopped under load (32 connections) and no request fails.

No registry is reachable from the testbed, so the images are built on its stand-in `python:3.11-slim` (a build
argument replaces the digest-pinned default, which only a registry can resolve).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from app.settings import Settings
from tests.helpers import ROOT, encode
from training.data import Mnist

PROJECT = "mnistsmoke"
IMAGE = "mnist-serve:0.1.0"
LB_IMAGE = "mnist-serve-lb:0.1.0"
STAND_IN_BASE = "python:3.11-slim"
IMAGE_BUDGET_MB = 275  # 234 MB before gRPC (grpcio: 19 MB) and the explanation graphs (8 MB)
LB = "http://127.0.0.1:8080"
LOAD_CONNECTIONS = 32


def docker_available() -> bool:
    if not shutil.which("docker") or not shutil.which("docker-compose"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(not docker_available(), reason="no Docker engine: run ../shared/tools/docker-testbed.sh up"),
]
ENV = {**os.environ, "MNIST_TOKEN_KEY": secrets.token_hex(32)}


def compose(*args: str, timeout: int = 900) -> str:
    command = ["docker-compose", "-p", PROJECT, *args]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=ENV)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def docker(*args: str, timeout: int = 120) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"docker {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def build(tag: str, context: str) -> None:
    command = ["docker", "build", "--network", "host", "--build-arg", f"BASE_IMAGE={STAND_IN_BASE}", "-t", tag, context]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def request(
    url: str, data: bytes | None = None, headers: dict[str, str] | None = None, content_type: str = "image/png"
) -> tuple[dict, dict[str, str]]:
    headers = {**({"Content-Type": content_type} if data is not None else {}), **(headers or {})}
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


def wait_healthy(service: str, timeout_s: float = 180) -> list[str]:
    """The service's container ids, once every one of them is healthy."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ids = compose("ps", "-q", service).split()
        states = [docker("inspect", "-f", "{{.State.Health.Status}}", i).strip() for i in ids]
        if ids and all(s == "healthy" for s in states):
            return ids
        time.sleep(2)
    raise TimeoutError(f"{service} not healthy: {states}")


@pytest.fixture(scope="module")
def deployment() -> Iterator[None]:
    build(IMAGE, ".")
    build(LB_IMAGE, "deploy/nginx")
    try:
        yield
    finally:
        compose("--profile", "scale", "down", "--remove-orphans", "-t", "20")


@pytest.fixture(scope="module")
def replicas(deployment: None) -> list[str]:
    """Two replicas behind nginx on :8080; their container ids."""
    compose("--profile", "scale", "up", "-d", "--scale", "replica=2", "lb")
    ids = wait_healthy("replica")
    wait_for(f"{LB}/health/ready")
    return ids


def image_growth_mb() -> float:
    sizes = {}
    for image in (IMAGE, STAND_IN_BASE):
        sizes[image] = int(docker("image", "inspect", "-f", "{{.Size}}", image).strip()) / 1e6
    return sizes[IMAGE] - sizes[STAND_IN_BASE]


def test_image_adds_at_most_its_budget(deployment: None, record_property: pytest.RecordProperty) -> None:
    growth = image_growth_mb()
    record_property("image_growth_mb", round(growth))
    assert growth <= IMAGE_BUDGET_MB, f"the image adds {growth:.0f} MB to its base"


def test_the_image_runs_read_only_as_a_non_root_user(deployment: None) -> None:
    out = docker("run", "--rm", "--pull=never", "--read-only", IMAGE, "python3", "-c", "import os; print(os.getuid())")
    assert out.strip() == "10001"


def test_compose_up_serves_predictions_and_activations(deployment: None, mnist_sample: Mnist) -> None:
    compose("up", "-d", "api")
    wait_healthy("api")
    prediction, _ = request("http://127.0.0.1:8000/predict", encode(mnist_sample.test.images[0]))
    assert prediction["digit"] == 7
    activations, _ = request(prediction["activations_url"] + "&layer=conv1")
    assert activations["layers"][0]["shape"] == [32, 28, 28]
    compose("stop", "-t", "45", "api")


def served_predictions(container: str) -> int:
    """The /predict requests a container logged (the service logs each request)."""
    return sum('"/predict"' in line for line in docker("logs", container).splitlines())


# Run inside a replica's container (its port is not published): the service as its neighbours reach it.
IN_CONTAINER_REQUEST = """
import sys, urllib.request
body = sys.stdin.buffer.read() or None
request = urllib.request.Request("http://127.0.0.1:8000" + sys.argv[1], data=body,
                                 headers={"Content-Type": "image/png"} if body else {})
print(urllib.request.urlopen(request, timeout=30).read().decode())
"""


def replica_request(container: str, path: str, body: bytes = b"") -> dict:
    """One request to one replica, by name, from inside its container: no load balancer chooses for us."""
    command = ["docker", "exec", "-i", container, "python3", "-c", IN_CONTAINER_REQUEST, path]
    result = subprocess.run(command, input=body, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    return dict(json.loads(result.stdout))


def test_replicas_behind_the_load_balancer(replicas: list[str], mnist_sample: Mnist) -> None:
    before = [served_predictions(c) for c in replicas]
    for image in mnist_sample.test.images[:20]:
        prediction, headers = request(f"{LB}/predict", encode(image))
        assert prediction["activations_url"].startswith(f"{LB}/activations?")
        assert headers["Server"] == "nginx"  # no version
        assert not any("upstream" in name.lower() for name in headers)  # no replica address
    assert all(served_predictions(c) > b for c, b in zip(replicas, before, strict=True))


def test_one_replica_answers_the_other_replicas_activations_url(replicas: list[str], mnist_sample: Mnist) -> None:
    """The token carries the image, keyed by the key the replicas share: any replica answers any replica's URL."""
    first, second = replicas[:2]
    prediction = replica_request(first, "/predict", encode(mnist_sample.test.images[0]))
    query = prediction["activations_url"].split("/activations", 1)[1]
    here = replica_request(first, "/activations" + query + "&layer=conv1")
    there = replica_request(second, "/activations" + query + "&layer=conv1")
    assert there["model"] == "cnn"
    assert there["layers"][0]["shape"] == [32, 28, 28]
    assert there["input"] == here["input"]  # the same 28x28 image, decoded from the token by each
    np.testing.assert_allclose(there["layers"][0]["data"], here["layers"][0]["data"], atol=1e-5)  # the same maps


def test_nginx_sets_the_forwarded_scheme_itself(replicas: list[str], mnist_sample: Mnist) -> None:
    # The replicas believe nginx; nginx replaces what the client claims with the scheme the client really used.
    prediction, _ = request(f"{LB}/predict", encode(mnist_sample.test.images[0]), {"X-Forwarded-Proto": "https"})
    assert prediction["activations_url"].startswith("http://127.0.0.1:8080/")


def test_an_oversize_body_gets_the_services_json_413(replicas: list[str]) -> None:
    body = b"\0" * (Settings().max_upload_bytes + 1)
    with pytest.raises(urllib.error.HTTPError) as error:
        request(f"{LB}/predict", body)
    assert error.value.code == 413
    assert json.loads(error.value.read())["code"] == "payload_too_large"


def load(url: str, body: bytes, stop: threading.Event) -> tuple[int, list[str]]:
    """One connection's worth of POSTs until stop is set: (answers 200, failures)."""
    ok, failures = 0, []
    while not stop.is_set():
        try:
            request(url, body)
            ok += 1
        except (OSError, ValueError) as exc:
            failures.append(repr(exc))
    return ok, failures


def test_stopping_a_replica_under_load_fails_no_request(
    replicas: list[str], mnist_sample: Mnist, record_property: pytest.RecordProperty
) -> None:
    body = encode(mnist_sample.test.images[0])
    stop = threading.Event()
    with ThreadPoolExecutor(LOAD_CONNECTIONS) as pool:
        runs = [pool.submit(load, f"{LB}/predict", body, stop) for _ in range(LOAD_CONNECTIONS)]
        time.sleep(3)
        docker("stop", "-t", "45", replicas[0], timeout=60)  # SIGTERM, as in a rollout or a scale-down
        time.sleep(8)  # nginx re-resolves every 5 s: the load runs on past the old address's expiry
        stop.set()
        results = [r.result(timeout=60) for r in runs]
    answered = sum(ok for ok, _ in results)
    failures = [f for _, fs in results for f in fs]
    record_property("requests_answered", answered)
    assert answered > LOAD_CONNECTIONS
    assert failures == [], f"{len(failures)} failed of {answered + len(failures)}: {failures[:3]}"
