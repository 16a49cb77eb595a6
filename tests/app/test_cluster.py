"""Running behind a balancer: readiness turns false at SIGTERM, URLs carry the proxy's scheme when the proxy is
trusted (and only then), placeholder keys are refused, the drain follows the request timeout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.__main__ import graceful_shutdown_s
from app.healthcheck import port as healthcheck_port
from app.main import create_app
from app.settings import Settings
from app.shutdown import on_stop_signal
from benchmarks.bench import serve
from tests.conftest import SERVICE, free_port, service_env
from tests.helpers import MODELS_DIR, ROOT, encode
from training.data import Mnist


@pytest.mark.parametrize("key", ["change-me", "CHANGE-ME", "changeme", " secret ", "replace-me"])
@pytest.mark.parametrize("field", ["MNIST_TOKEN_KEY", "MNIST_API_KEY"])
def test_placeholder_keys_are_refused(monkeypatch: pytest.MonkeyPatch, field: str, key: str) -> None:
    monkeypatch.setenv(field, key)
    with pytest.raises(ValidationError, match="placeholder"):
        Settings()


def test_a_real_key_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MNIST_TOKEN_KEY", "q8V1n0x2M9c4Rz7Ue3Lh5Wk6")
    assert Settings().token_key == "q8V1n0x2M9c4Rz7Ue3Lh5Wk6"


@pytest.mark.parametrize(("timeout_s", "drain_s"), [(30.0, 32), (5.0, 7), (2.5, 5)])
def test_the_drain_follows_the_request_timeout(timeout_s: float, drain_s: int) -> None:
    assert graceful_shutdown_s(Settings(request_timeout_s=timeout_s)) == drain_s


def test_readiness_turns_false_when_the_service_stops() -> None:
    with TestClient(create_app(Settings(models_dir=MODELS_DIR))) as client:
        assert client.get("/health/ready").status_code == 200
        assert client.get("/v2/health/ready").json() == {"ready": True}
        client.app.state.draining = True  # type: ignore[attr-defined]
        response = client.get("/health/ready")
        assert (response.status_code, response.json()["status"]) == (503, "draining")
        v2 = client.get("/v2/health/ready")  # KServe's readiness probe: the same answer
        assert (v2.status_code, v2.json()) == (503, {"ready": False})
        assert client.get("/health/live").status_code == 200  # draining is not dead: no restart
        assert client.get("/v2/health/live").status_code == 200


@pytest.fixture
def restore_stop_handlers() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.usefixtures("restore_stop_handlers")
def test_a_stop_signal_marks_draining_then_reaches_the_servers_handler() -> None:
    events: list[str] = []
    signal.signal(signal.SIGTERM, lambda *_: events.append("server"))  # stands for uvicorn's handle_exit
    assert on_stop_signal(lambda: events.append("draining"))
    signal.raise_signal(signal.SIGTERM)
    assert events == ["draining", "server"]


def predict_url_scheme(port: int, image: bytes, headers: dict[str, str]) -> str:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/predict", data=image, headers={"Content-Type": "image/png", **headers}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["activations_url"].split("://")[0]


@pytest.mark.parametrize(
    ("allowed", "expected"),
    [
        (None, "https"),  # the default trusts loopback: a proxy on the same host (or pod)
        ("127.0.0.0/8", "https"),
        ("192.0.2.10", "http"),  # the header comes from an address that is not a trusted proxy: ignored
    ],
)
def test_activations_url_follows_a_trusted_proxys_scheme(
    mnist_sample: Mnist, allowed: str | None, expected: str
) -> None:
    port = free_port()
    env = {**service_env(port), "MNIST_MODEL_PROCESS": "false"}
    if allowed is not None:
        env["MNIST_FORWARDED_ALLOW_IPS"] = allowed
    with serve(SERVICE, f"http://127.0.0.1:{port}/health/ready", env):
        image = encode(mnist_sample.test.images[0])
        assert predict_url_scheme(port, image, {"X-Forwarded-Proto": "https"}) == expected
        assert predict_url_scheme(port, image, {}) == "http"


@pytest.mark.parametrize(
    ("env", "port"), [({}, Settings().port), ({"PORT": "9001"}, 9001), ({"PORT": "9001", "MNIST_PORT": "9002"}, 9002)]
)
def test_the_health_check_probes_the_port_the_service_listens_on(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], port: int
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings().port == port
    assert healthcheck_port() == port


def test_the_health_check_imports_only_the_standard_library() -> None:
    # It runs every 10 s in every container: pydantic or the app would multiply its cost.
    heavy = "('pydantic', 'fastapi', 'numpy', 'urllib.request')"
    code = f"import sys, app.healthcheck; print(sorted(m for m in {heavy} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert result.stdout.strip() == "[]"


def test_the_health_check_passes_on_a_ready_service(live_server: str) -> None:
    env = {**os.environ, "MNIST_PORT": live_server.split(":")[1]}
    assert subprocess.run([sys.executable, "-m", "app.healthcheck"], env=env, cwd=ROOT, timeout=10).returncode == 0
    env["MNIST_PORT"] = str(free_port())
    down = subprocess.run([sys.executable, "-m", "app.healthcheck"], env=env, cwd=ROOT, timeout=10, capture_output=True)
    assert down.returncode == 1
