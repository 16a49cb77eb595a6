"""Zero failed requests while the model is reloaded under load: 32 clients on /predict against the real process
while the model is loaded again 10 times, its card's version flipping each time (so each load is a real swap that
the answers show), with the models in the worker's threads and in the model process."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from benchmarks.bench import serve
from tests.app.routes.test_repository import copy_models, set_card_version
from tests.conftest import SERVICE, free_port, service_env
from tests.helpers import encode
from training.data import Mnist

CLIENTS = 32
RELOADS = 10


def post(port: int, path: str, body: bytes, content_type: str) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", body, {"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def reload_under_load(port: int, image: bytes, folder: Path) -> tuple[list[tuple[int, object]], list[int]]:
    """(status, model_version) of every /predict made while the model was reloaded RELOADS times; each load's status."""
    answers: list[tuple[int, object]] = []
    done = threading.Event()

    def client() -> None:
        while not done.is_set():
            status, body = post(port, "/predict", image, "image/png")
            answers.append((status, body.get("model_version", body)))

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    loads = []
    try:
        for version in range(2, 2 + RELOADS):
            time.sleep(0.1)  # requests in flight on every version
            set_card_version(folder, str(version))
            loads.append(post(port, "/v2/repository/models/cnn/load", b"", "application/json")[0])
        time.sleep(0.1)
    finally:
        done.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a request was left hanging"
    return answers, loads


@pytest.mark.parametrize("model_process", ["false", "true"], ids=["threads", "model-process"])
def test_no_request_fails_while_the_model_is_reloaded(tmp_path: Path, mnist_sample: Mnist, model_process: str) -> None:
    if model_process == "true" and (os.cpu_count() or 1) < 2:
        pytest.skip("the model process needs two cores")
    repository = copy_models(tmp_path, ("cnn",))
    port = free_port()
    env = {**service_env(port), "MNIST_MODELS_DIR": str(repository), "MNIST_MODEL_PROCESS": model_process}
    with serve(SERVICE, f"http://127.0.0.1:{port}/health/ready", env):
        answers, loads = reload_under_load(port, encode(mnist_sample.test.images[0]), repository / "cnn")
        _, models = post(port, "/v2/repository/index", b"", "application/json")
    assert loads == [200] * RELOADS
    statuses = [status for status, _ in answers]
    assert statuses.count(200) == len(statuses), {s: statuses.count(s) for s in set(statuses)}
    versions = {version for _, version in answers}
    assert len(versions) >= 3  # answered by the first version, the last and versions between: real swaps under load
    assert versions <= {str(v) for v in range(1, 2 + RELOADS)}
    assert models == [{"name": "cnn", "version": str(1 + RELOADS), "state": "READY", "reason": ""}]  # type: ignore[comparison-overlap]
    print(f"{len(answers)} requests, all 200, answered by versions {sorted(versions, key=int)}")  # noqa: T201
