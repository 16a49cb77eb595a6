"""Exposure and limits: API key, CORS, request timeout, no internals in responses, graceful shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.runtime.registry import StartupError
from app.settings import Settings
from benchmarks.bench import serve
from tests.conftest import SERVICE, free_port, service_env
from tests.helpers import MODELS_DIR, ROOT, encode
from training.data import Mnist


@pytest.fixture(scope="module")
def keyed() -> Iterator[TestClient]:
    settings = Settings(models_dir=MODELS_DIR, api_key="s3cret", cors_origins=["https://digits.example"])
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/models", {}, 401),
        ("/models", {"X-API-Key": "wrong"}, 401),
        ("/models", {"X-API-Key": "s3cret"}, 200),
        ("/models", {"Authorization": "Bearer s3cret"}, 200),
        ("/models", {"Authorization": "s3cret"}, 401),  # the key without the Bearer scheme
        ("/predict", {"X-API-Key": "s3cret"}, 405),  # let in with the key: GET is the wrong method
        ("/v2/models/cnn", {}, 401),
        ("/health/ready", {}, 200),
        ("/health/live", {}, 200),
        ("/docs", {}, 200),
        ("/openapi.json", {}, 200),
        ("/", {}, 200),
    ],
)
def test_api_key_guards_everything_but_health_and_docs(
    keyed: TestClient, path: str, headers: dict, status: int
) -> None:
    response = keyed.get(path, headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
        expected = {"detail": NEEDS_KEY, "code": "unauthorized"} if not path.startswith("/v2") else {"error": NEEDS_KEY}
        assert response.json() == expected


NEEDS_KEY = "This service needs an API key: send it as header X-API-Key or Authorization: Bearer."


def test_v2_unauthorised_body_follows_the_protocol(keyed: TestClient) -> None:
    response = keyed.post("/v2/models/cnn/infer", content=b"{}")
    assert response.status_code == 401
    assert response.json() == {"error": NEEDS_KEY}


def test_cors_is_closed_by_default(client: TestClient) -> None:
    response = client.options(
        "/predict", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in response.headers


def test_cors_allows_configured_origins(keyed: TestClient) -> None:
    preflight = {"Origin": "https://digits.example", "Access-Control-Request-Method": "POST"}
    response = keyed.options("/predict", headers=preflight)
    assert response.headers["access-control-allow-origin"] == "https://digits.example"
    other = keyed.options("/predict", headers={**preflight, "Origin": "https://evil.example"})
    assert other.headers.get("access-control-allow-origin") != "https://evil.example"


def test_slow_requests_time_out_with_a_json_504(monkeypatch: pytest.MonkeyPatch, mnist_sample: Mnist) -> None:
    from app.runtime import executor

    def slow_run(session, images, outputs):  # type: ignore[no-untyped-def]
        time.sleep(1.0)
        return original(session, images, outputs)

    original = executor.run_session
    monkeypatch.setattr(executor, "run_session", slow_run)
    settings = Settings(models_dir=MODELS_DIR, request_timeout_s=0.2, batching=False, model_process=False)
    with TestClient(create_app(settings)) as client:
        response = client.post("/predict", files={"file": encode(mnist_sample.test.images[0])})
    assert response.status_code == 504
    assert response.json()["code"] == "timeout"


def test_errors_never_show_internals(client: TestClient) -> None:
    for response in (
        client.post("/predict", files={"file": ("x.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "image/png")}),
        client.get("/activations?input=" + "A" * 300),
        client.post("/v2/models/cnn/infer", content=b"{not json"),
    ):
        text = response.text
        assert response.status_code < 500
        assert "Traceback" not in text
        assert str(ROOT) not in text
        assert "site-packages" not in text


def test_strict_cuda_without_a_gpu_refuses_to_start(tmp_path: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has a CUDA build of onnxruntime")
    settings = Settings(models_dir=MODELS_DIR, provider="cuda", strict_provider=True)
    with pytest.raises(StartupError, match="MNIST_PROVIDER=cuda"), TestClient(create_app(settings)):
        pass


def test_broken_default_model_stops_the_process_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "MNIST_MODELS_DIR": str(tmp_path), "MNIST_PORT": str(free_port())}
    result = subprocess.run(SERVICE, env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode != 0
    assert "cannot read" in result.stderr
    assert "manifest.json" in result.stderr


def test_sigterm_lets_in_flight_requests_finish(mnist_sample: Mnist) -> None:
    """A request that is being served when SIGTERM arrives still gets its answer; then the process exits."""
    port = free_port()
    with serve(SERVICE, f"http://127.0.0.1:{port}/health/ready", service_env(port)) as process:
        answers: list[int] = []

        def slow_upload() -> None:
            # Sends the body slowly, so the request is still in flight when the signal arrives.
            body = encode(mnist_sample.test.images[0])
            chunks = iter([body[: len(body) // 2], body[len(body) // 2 :]])

            def trickle():  # type: ignore[no-untyped-def]
                yield next(chunks)
                time.sleep(1.0)
                yield next(chunks)

            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/predict",
                data=trickle(),
                headers={"Content-Type": "image/png", "Content-Length": str(len(body))},
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                answers.append(response.status)

        thread = threading.Thread(target=slow_upload)
        thread.start()
        time.sleep(0.4)
        process.send_signal(signal.SIGTERM)
        thread.join(timeout=30)
        assert answers == [200]
        # uvicorn shuts down gracefully, then re-raises the signal it caught: that is the exit status.
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
