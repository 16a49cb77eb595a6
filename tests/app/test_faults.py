"""Faults under load, against the real process: `kill -9` of the model process, or of a worker, while clients send.
Only the requests in flight fail (503 model_unavailable with Retry-After, or a dropped connection for a worker),
readiness reports the gap, the service recovers by itself, and no request is left hanging."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks.bench import serve
from tests.conftest import SERVICE, free_port, service_env
from tests.helpers import encode
from training.data import Mnist

pytestmark = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="the model process needs two cores")
CLIENTS = 64
LOAD_S = 6.0


def children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


def spawned(pid: int) -> list[int]:
    """The multiprocessing children of a process (model process or uvicorn workers), not its resource tracker."""
    return [c for c in children(pid) if b"multiprocessing.spawn" in Path(f"/proc/{c}/cmdline").read_bytes()]


def predict(port: int, image: bytes) -> tuple[int, str, str | None]:
    """(status, code, Retry-After) of one /predict; status 0 for a dropped connection."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", image, {"Content-Type": "image/png"})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, "", None
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()).get("code", ""), error.headers.get("Retry-After")
    except (ConnectionError, urllib.error.URLError):
        return 0, "dropped", None


def ready(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=20) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (ConnectionError, urllib.error.URLError):
        return 0  # the connection dropped: the worker that held it was killed


def under_load(port: int, image: bytes, fault: Callable[[], None]) -> tuple[list[list[tuple]], list[int]]:
    """Each client's answers, in order, and readiness every 50 ms, for LOAD_S with `fault` after a third of it."""
    answers: list[list[tuple]] = [[] for _ in range(CLIENTS)]
    readiness: list[int] = []
    stop = time.monotonic() + LOAD_S

    def client(mine: list[tuple]) -> None:
        while time.monotonic() < stop:
            mine.append((time.monotonic(), *predict(port, image)))

    def probe() -> None:
        while time.monotonic() < stop:
            readiness.append(ready(port))
            time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(mine,)) for mine in answers] + [threading.Thread(target=probe)]
    for thread in threads:
        thread.start()
    time.sleep(LOAD_S / 3)
    fault()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a request was left hanging"
    return answers, readiness


def test_kill_9_of_the_model_process_fails_only_the_requests_in_flight(mnist_sample: Mnist) -> None:
    port = free_port()
    image = encode(mnist_sample.test.images[0])
    with serve(SERVICE, f"http://127.0.0.1:{port}/health/ready", service_env(port)) as server:
        [model_process] = spawned(server.pid)
        answers, readiness = under_load(port, image, lambda: os.kill(model_process, signal.SIGKILL))
        assert spawned(server.pid) not in ([], [model_process])  # a new model process
        assert ready(port) == 200
        assert predict(port, image)[0] == 200
    outcomes = {answer[1:] for mine in answers for answer in mine}
    assert outcomes <= {(200, "", None), (503, "model_unavailable", "1")}
    failed = [sum(a[1] == 503 for a in mine) for mine in answers]
    assert 0 < sum(failed) <= CLIENTS  # the calls the process held, at most one per client
    assert max(failed) == 1
    assert all(mine[-1][1] == 200 for mine in answers)  # every client is served again
    assert 503 in readiness  # the gap was reported
    assert readiness[-1] == 200


def test_kill_9_of_a_worker_is_restarted_by_the_supervisor(mnist_sample: Mnist) -> None:
    port = free_port()
    image = encode(mnist_sample.test.images[0])
    env = {**service_env(port), "MNIST_WORKERS": "2"}
    with serve(SERVICE, f"http://127.0.0.1:{port}/health/ready", env) as server:
        workers = spawned(server.pid)
        assert len(workers) == 2
        answers, _ = under_load(port, image, lambda: os.kill(workers[0], signal.SIGKILL))
        deadline = time.monotonic() + 60  # uvicorn checks its workers every 0.5 s; a new one loads the models
        while (now := spawned(server.pid)) and (len(now) < 2 or workers[0] in now) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(now) == 2
        assert workers[0] not in now
        assert workers[1] in now  # the other worker served on
    outcomes = {answer[1:] for mine in answers for answer in mine}
    assert outcomes <= {(200, "", None), (0, "dropped", None)}
    dropped = [sum(a[1] == 0 for a in mine) for mine in answers]
    assert max(dropped) <= 1  # only the request in flight on the killed worker
    assert all(mine[-1][1] == 200 for mine in answers)
