"""The Open Inference Protocol over gRPC, driven by the unmodified Triton gRPC client (and its own generated stubs for
what the client does not expose: `contents`, metadata), against `python -m app` as users run it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton
from fastapi.testclient import TestClient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from app.main import create_app
from app.settings import Settings
from benchmarks.bench import serve
from tests.conftest import free_port, service_env
from tests.helpers import MODELS_DIR
from training.data import Mnist


@pytest.fixture(scope="module")
def grpc_server() -> Iterator[tuple[str, str]]:
    """(gRPC address, HTTP base URL) of `python -m app` with gRPC on a free port."""
    port, grpc_port = free_port(), free_port()
    env = {**service_env(port), "MNIST_GRPC_PORT": str(grpc_port)}
    with serve([sys.executable, "-m", "app"], f"http://127.0.0.1:{port}/health/ready", env):
        yield f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def client(grpc_server: tuple[str, str]) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url=grpc_server[0])


@pytest.fixture(scope="module")
def stub(grpc_server: tuple[str, str]) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(grpc_server[0]) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def direct(model: str, images: np.ndarray, output: str) -> np.ndarray:
    session = ort.InferenceSession(str(MODELS_DIR / model / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run([output], {"image": images})[0]


def images_of(mnist: Mnist, count: int) -> np.ndarray:
    return (mnist.test.images[:count].astype(np.float32) / 255)[..., None]


def status_of(error: InferenceServerException) -> str:
    return str(error.status())


def test_server_and_model_status(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("cnn")
    assert client.is_model_ready("lenet", model_version="1")
    assert not client.is_model_ready("lenet", model_version="2")
    assert not client.is_model_ready("nope")
    assert client.get_server_metadata(as_json=True)["name"] == "mnist-serve"


def test_model_metadata(client: triton.InferenceServerClient) -> None:
    metadata = client.get_model_metadata("lenet", as_json=True)
    assert metadata["versions"] == ["1"]
    assert metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"] == [{"name": "image", "datatype": "FP32", "shape": ["-1", "28", "28", "1"]}]
    assert {o["name"] for o in metadata["outputs"]} == {"logits", "probabilities", "conv1", "conv2", "digit_score"}


def test_infer_fp32_raw_with_activations(client: triton.InferenceServerClient, mnist_sample: Mnist) -> None:
    images = images_of(mnist_sample, 16)
    request = triton.InferInput("image", list(images.shape), "FP32")
    request.set_data_from_numpy(images)
    outputs = [triton.InferRequestedOutput(name) for name in ("probabilities", "conv1", "digit_score")]
    result = client.infer("lenet", [request], outputs=outputs, request_id="req-7")
    assert result.get_response().id == "req-7"
    assert [o.name for o in result.get_response().outputs] == ["probabilities", "conv1", "digit_score"]
    np.testing.assert_allclose(result.as_numpy("probabilities"), direct("lenet", images, "probabilities"), atol=1e-6)
    np.testing.assert_allclose(result.as_numpy("conv1"), direct("lenet", images, "conv1"), atol=1e-5)
    np.testing.assert_allclose(result.as_numpy("digit_score"), direct("lenet", images, "digit_score"), atol=1e-6)
    assert result.as_numpy("probabilities").argmax(1).tolist() == mnist_sample.test.labels[:16].tolist()


def test_infer_uint8_every_output_by_default(client: triton.InferenceServerClient, mnist_sample: Mnist) -> None:
    images = mnist_sample.test.images[:4][..., None]
    request = triton.InferInput("image", list(images.shape), "UINT8")
    request.set_data_from_numpy(images)
    result = client.infer("cnn", [request], model_version="1")
    expected = direct("cnn", images.astype(np.float32) / 255, "probabilities")
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-6)
    assert result.as_numpy("conv4").shape[0] == 4  # no outputs named: all of them, activations included


@pytest.mark.parametrize("datatype", ["FP32", "UINT8"])
def test_contents_in_contents_out(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, mnist_sample: Mnist, datatype: str
) -> None:
    pixels = mnist_sample.test.images[:2]
    request = service_pb2.ModelInferRequest(model_name="cnn")
    tensor = request.inputs.add(name="image", datatype=datatype, shape=[2, 28, 28, 1])
    if datatype == "FP32":
        tensor.contents.fp32_contents.extend((pixels.astype(np.float32) / 255).ravel().tolist())
    else:
        tensor.contents.uint_contents.extend(pixels.ravel().tolist())
    request.outputs.add(name="probabilities")
    response = stub.ModelInfer(request)
    assert not response.raw_output_contents
    (output,) = response.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("probabilities", "FP32", [2, 10])
    probabilities = np.array(output.contents.fp32_contents).reshape(2, 10)
    expected = direct("cnn", (pixels.astype(np.float32) / 255)[..., None], "probabilities")
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)


def infer_error(client: triton.InferenceServerClient, model: str, images: np.ndarray, datatype: str, **kw: object):
    request = triton.InferInput("image", list(images.shape), datatype)
    request.set_data_from_numpy(images)
    with pytest.raises(InferenceServerException) as caught:
        client.infer(model, [request], **kw)
    return caught.value


@pytest.mark.parametrize(
    ("model", "images", "datatype", "kwargs", "status", "message"),
    [
        ("resnet", np.zeros((1, 28, 28, 1), np.float32), "FP32", {}, "NOT_FOUND", "Unknown model 'resnet'"),
        ("cnn", np.zeros((1, 28, 28, 1), np.float32), "FP32", {"model_version": "9"}, "NOT_FOUND", "version 9"),
        ("cnn", np.zeros((1, 28, 28), np.float32), "FP32", {}, "INVALID_ARGUMENT", "is not [N, 28, 28, 1]"),
        ("cnn", np.full((1, 28, 28, 1), np.nan, np.float32), "FP32", {}, "INVALID_ARGUMENT", "finite"),
        ("cnn", np.full((1, 28, 28, 1), 2, np.float32), "FP32", {}, "INVALID_ARGUMENT", "lie in [0, 1]"),
        ("cnn", np.zeros((1, 28, 28, 1), np.int64), "INT64", {}, "INVALID_ARGUMENT", "datatype 'INT64'"),
        ("cnn", np.zeros((65, 28, 28, 1), np.uint8), "UINT8", {}, "INVALID_ARGUMENT", "at most 64"),
        (
            "cnn",
            np.zeros((1, 28, 28, 1), np.float32),
            "FP32",
            {"outputs": [triton.InferRequestedOutput("fc1")]},
            "INVALID_ARGUMENT",
            "Unknown output 'fc1'",
        ),
    ],
)
def test_infer_errors(
    client: triton.InferenceServerClient,
    model: str,
    images: np.ndarray,
    datatype: str,
    kwargs: dict[str, object],
    status: str,
    message: str,
) -> None:
    error = infer_error(client, model, images, datatype, **kwargs)
    assert status_of(error) == f"StatusCode.{status}"
    assert message in error.message()


def test_raw_contents_that_do_not_fit_the_shape(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    request = service_pb2.ModelInferRequest(model_name="cnn")
    request.inputs.add(name="image", datatype="FP32", shape=[1, 28, 28, 1])
    request.raw_input_contents.append(b"\0" * 10)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "no whole number of FP32 values" in caught.value.details()


def test_request_id_is_echoed_or_made_up(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    _, call = stub.ServerLive.with_call(service_pb2.ServerLiveRequest(), metadata=(("x-request-id", "trace-42"),))
    assert ("x-request-id", "trace-42") in call.trailing_metadata()
    _, call = stub.ServerLive.with_call(service_pb2.ServerLiveRequest(), metadata=(("x-request-id", "bad id!"),))
    made_up = dict(call.trailing_metadata())["x-request-id"]
    assert len(made_up) == 32
    assert made_up != "bad id!"
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelMetadata(service_pb2.ModelMetadataRequest(name="nope"), metadata=(("x-request-id", "trace-43"),))
    assert ("x-request-id", "trace-43") in caught.value.trailing_metadata()


def test_what_is_not_offered_is_unimplemented(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.get_inference_statistics()
    assert status_of(caught.value) == "StatusCode.UNIMPLEMENTED"
    request = triton.InferInput("image", [1, 28, 28, 1], "UINT8")
    request.set_data_from_numpy(np.zeros((1, 28, 28, 1), np.uint8))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("cnn", [request], outputs=[triton.InferRequestedOutput("probabilities", class_count=3)])
    assert status_of(caught.value) == "StatusCode.UNIMPLEMENTED"
    assert "classification extension" in caught.value.message()


def test_the_model_repository_over_grpc(
    client: triton.InferenceServerClient, stub: service_pb2_grpc.GRPCInferenceServiceStub
) -> None:
    """tritonclient.grpc's repository calls, as over REST: index, unload, load again, refusals with their codes."""
    index = {m["name"]: m for m in client.get_model_repository_index(as_json=True)["models"]}
    assert set(index) == {"svm", "softmax", "lenet", "cnn"}
    assert index["lenet"]["state"] == "READY"
    assert index["lenet"]["version"] == "1"
    client.unload_model("lenet")
    assert not client.is_model_ready("lenet")
    unloaded = {m["name"]: m for m in client.get_model_repository_index(as_json=True)["models"]}["lenet"]
    assert (unloaded["state"], unloaded["reason"]) == ("UNAVAILABLE", "unloaded")
    ready = stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(ready=True)).models
    assert {m.name for m in ready} == {"svm", "softmax", "cnn"}
    client.load_model("lenet")
    assert client.is_model_ready("lenet")
    refusals = [
        (lambda: client.unload_model("cnn"), "StatusCode.FAILED_PRECONDITION"),  # the default model
        (lambda: client.load_model("nope"), "StatusCode.NOT_FOUND"),
        (lambda: client.load_model("lenet", config='{"max_batch_size": 8}'), "StatusCode.INVALID_ARGUMENT"),
    ]
    for call, status in refusals:
        with pytest.raises(InferenceServerException) as caught:
            call()
        assert status_of(caught.value) == status
    assert client.is_model_ready("cnn")


def test_grpc_calls_are_counted(client: triton.InferenceServerClient, grpc_server: tuple[str, str]) -> None:
    assert client.is_server_live()
    with pytest.raises(InferenceServerException):
        client.get_model_metadata("nope")
    with urllib.request.urlopen(f"{grpc_server[1]}/metrics") as response:
        text = response.read().decode()
    assert 'mnist_grpc_requests_total{code="OK",method="ServerLive"}' in text
    assert 'mnist_grpc_requests_total{code="NOT_FOUND",method="ModelMetadata"}' in text
    assert 'mnist_grpc_request_duration_seconds_count{method="ServerLive"}' in text


def test_api_key_is_required_but_for_health(mnist_sample: Mnist) -> None:
    port = free_port()
    settings = Settings(models_dir=MODELS_DIR, api_key="s3cret-key", grpc_port=port, model_process=False)
    with TestClient(create_app(settings, serve_grpc=True)):
        client = triton.InferenceServerClient(url=f"127.0.0.1:{port}")
        assert client.is_server_live()
        with pytest.raises(InferenceServerException) as caught:
            client.get_model_metadata("cnn")
        assert status_of(caught.value) == "StatusCode.UNAUTHENTICATED"
        assert "API key" in caught.value.message()
        with pytest.raises(InferenceServerException):
            client.get_model_metadata("cnn", headers={"x-api-key": "wrong"})
        assert client.get_model_metadata("cnn", headers={"x-api-key": "s3cret-key"}).name == "cnn"
        bearer = {"authorization": "Bearer s3cret-key"}
        request = triton.InferInput("image", [1, 28, 28, 1], "UINT8")
        request.set_data_from_numpy(mnist_sample.test.images[:1][..., None])
        result = client.infer("cnn", [request], headers=bearer)
        assert int(result.as_numpy("probabilities").argmax()) == int(mnist_sample.test.labels[0])
        client.close()


def test_a_taken_port_stops_the_process_with_one_line() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        env = {**os.environ, **service_env(free_port()), "MNIST_GRPC_PORT": str(taken)}
        result = subprocess.run([sys.executable, "-m", "app"], env=env, capture_output=True, text=True, timeout=90)
    assert result.returncode != 0
    assert f"cannot serve gRPC on 127.0.0.1:{taken}" in result.stderr
    assert "MNIST_GRPC_PORT" in result.stderr


def test_large_calls_share_the_body_budget_with_http(mnist_sample: Mnist) -> None:
    port = free_port()
    settings = Settings(models_dir=MODELS_DIR, grpc_port=port, model_process=False, admission_wait_s=0.05)
    with TestClient(create_app(settings, serve_grpc=True)) as http:
        assert http.portal is not None
        bodies = http.app.state.body_budget  # type: ignore[attr-defined]
        client = triton.InferenceServerClient(url=f"127.0.0.1:{port}")
        large = triton.InferInput("image", [32, 28, 28, 1], "FP32")  # 100 KB: counted
        large.set_data_from_numpy(images_of(mnist_sample, 32))
        small = triton.InferInput("image", [1, 28, 28, 1], "FP32")  # 3 KB: never waits
        small.set_data_from_numpy(images_of(mnist_sample, 1))
        held = http.portal.call(bodies.acquire, bodies.capacity)
        assert client.infer("cnn", [small]).as_numpy("probabilities").shape == (1, 10)
        with pytest.raises(InferenceServerException) as refused:
            client.infer("cnn", [large])
        assert status_of(refused.value) == "StatusCode.UNAVAILABLE"
        assert "MNIST_BODY_BUDGET_BYTES" in refused.value.message()
        http.portal.call(bodies.release, held)
        assert client.infer("cnn", [large]).as_numpy("probabilities").shape == (32, 10)
        assert bodies.in_use == 0
        client.close()
