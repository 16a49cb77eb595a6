"""The core without any transport: bytes and arrays in, results out, errors with codes only."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator
from typing import TypeVar

import numpy as np
import pytest
from PIL import Image

from app.admission import Budget, DecodePool
from app.dataplane import DataPlane
from app.errors import BlankImage, InvalidInferenceRequest, UnknownLayer, UnknownModel
from app.main import runtime_config
from app.runtime.registry import load_registry
from app.settings import Settings
from app.tensors import TensorInput
from tests.helpers import MODELS_DIR, encode
from training.data import Mnist

T = TypeVar("T")
BASE = "https://digits.example/"


@pytest.fixture(scope="module")
def dataplane() -> Iterator[DataPlane]:
    settings = Settings(models_dir=MODELS_DIR, token_key="dataplane-test-key", max_batch_images=8)
    config = runtime_config(Settings(batching=False, model_process=False, intra_op_threads=1))
    registry = asyncio.run(load_registry(MODELS_DIR, default_model="cnn", config=config))
    pool = DecodePool(Budget(settings.decode_budget_pixels, 1.0, "decoded pixels", "MNIST_DECODE_BUDGET_PIXELS"), 1)
    yield DataPlane(registry, settings, pool)
    pool.close()


def run(awaitable: Awaitable[T]) -> T:
    async def wrapped() -> T:
        return await awaitable

    return asyncio.run(wrapped())


def test_classify_takes_bytes_and_a_base_url(dataplane: DataPlane, mnist_sample: Mnist) -> None:
    digit = mnist_sample.test.images[0]
    large = encode(Image.fromarray(255 - digit).resize((300, 300)), "JPEG")  # decoded in the pool, not inline
    for data in (encode(digit), large):
        prediction = run(dataplane.classify(data, model="lenet", base_url=BASE, debug=True))
        assert prediction.digit == mnist_sample.test.labels[0]
        assert prediction.model == "lenet"
        assert prediction.activations_url.startswith(f"{BASE}activations?input=")
        assert prediction.input_png is not None


def test_a_batch_answers_each_file(dataplane: DataPlane, mnist_sample: Mnist) -> None:
    uploads = [("a.png", encode(mnist_sample.test.images[1])), ("blank.png", encode(np.zeros((28, 28), np.uint8)))]
    batch = run(dataplane.classify_batch(uploads, model=None, base_url=BASE))
    assert batch.model == "cnn"
    assert batch.results[0].prediction is not None
    assert batch.results[0].prediction.digit == mnist_sample.test.labels[1]
    assert batch.results[1].error is not None
    assert batch.results[1].error.code == BlankImage.code


def test_activations_of_an_upload_and_of_its_token(dataplane: DataPlane, mnist_sample: Mnist) -> None:
    data = encode(mnist_sample.test.images[2])
    token = run(dataplane.classify(data, model="lenet", base_url=BASE)).activations_url.split("input=")[1]
    token = token.split("&")[0]
    from_upload = run(dataplane.activations(data, model="lenet", layers=["conv2"], encoding="json"))
    from_token = run(dataplane.activations(token, model="lenet", layers=["conv2"], encoding="json"))
    assert from_upload.layers[0].shape == [64, 14, 14]
    assert from_upload == from_token


def test_tensors_in_outputs_out(dataplane: DataPlane, mnist_sample: Mnist) -> None:
    pixels = mnist_sample.test.images[:3].ravel()
    image = TensorInput("image", "UINT8", (3, 28, 28, 1), pixels)
    result = run(dataplane.infer_tensors(model="cnn", version="1", inputs=[image], outputs=["digit_score", "logits"]))
    assert (result.model, result.version, list(result.outputs)) == ("cnn", "1", ["digit_score", "logits"])
    assert result.outputs["logits"].argmax(1).tolist() == mnist_sample.test.labels[:3].tolist()


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda d: d.classify(b"", model="resnet", base_url=BASE), UnknownModel, "Unknown model 'resnet'"),
        (lambda d: d.activations(b"", model="cnn", layers=["fc9"], encoding="json"), UnknownLayer, "no layer 'fc9'"),
        (
            lambda d: d.infer_tensors(model="cnn", version=None, inputs=[], outputs=None),
            InvalidInferenceRequest,
            "exactly one input",
        ),
        (
            lambda d: d.infer_tensors(
                model="cnn", version=None, inputs=[TensorInput("image", "UINT8", (9, 28, 28, 1), None)], outputs=None
            ),
            InvalidInferenceRequest,
            "at most 8",
        ),
    ],
)
def test_errors_carry_a_code_and_a_message(dataplane: DataPlane, call, error: type, message: str) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(")):
        run(call(dataplane))
