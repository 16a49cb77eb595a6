"""Behaviour of the committed models through preprocessing + ONNX Runtime, as the service runs them."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from app.cards import read_card
from app.preprocess import model_input, preprocess
from tests.app.test_preprocess import thin_seven
from tests.helpers import MODELS_DIR, canvas_of, encode, photo_of
from training.data import Mnist

SAMPLE_FLOOR = {"svm": 0.85, "softmax": 0.85, "lenet": 0.98, "cnn": 0.98}  # 300 images: a few errors move 1%


@pytest.fixture(scope="module", params=["svm", "softmax", "lenet", "cnn"])
def model(request: pytest.FixtureRequest) -> tuple[str, ort.InferenceSession]:
    path = MODELS_DIR / request.param / "model.onnx"
    return request.param, ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def classify(session: ort.InferenceSession, digits: np.ndarray) -> np.ndarray:
    return session.run(["probabilities"], {"image": model_input(digits)})[0].argmax(axis=1)


def test_accuracy_on_the_shipped_sample(model: tuple[str, ort.InferenceSession], mnist_sample: Mnist) -> None:
    name, session = model
    accuracy = (classify(session, mnist_sample.test.images) == mnist_sample.test.labels).mean()
    assert accuracy >= SAMPLE_FLOOR[name]


@pytest.mark.parametrize(
    "variant",
    [
        lambda d: encode(255 - d),
        lambda d: encode(photo_of(d), "JPEG", quality=85),
        lambda d: encode(photo_of(d, size=600, scale=16, offset=(140, 10))),
        lambda d: encode(canvas_of(d)),
        lambda d: encode(np.pad(d, ((40, 0), (0, 60)))),
    ],
    ids=["inverted", "photo", "large-offset", "rgba-canvas", "small-offset"],
)
def test_cnns_are_invariant_to_size_offset_polarity_and_alpha(variant, mnist_sample: Mnist) -> None:
    images, labels = mnist_sample.test.images[:40], mnist_sample.test.labels[:40]
    for name in ("lenet", "cnn"):
        session = ort.InferenceSession(str(MODELS_DIR / name / "model.onnx"), providers=["CPUExecutionProvider"])
        digits = np.stack([preprocess(variant(image)) for image in images])
        assert (classify(session, digits) == labels).mean() >= 0.95, name
        scores = session.run(["digit_score"], {"image": model_input(digits)})[0][:, 0]
        assert (scores >= read_card(MODELS_DIR / name).detector.threshold).mean() >= 0.95, name  # still digits


def test_a_thin_pen_seven_is_a_seven() -> None:
    session = ort.InferenceSession(str(MODELS_DIR / "cnn" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert classify(session, preprocess(encode(thin_seven()))[None])[0] == 7


@pytest.mark.parametrize("name", ["lenet", "cnn"])
def test_cnn_files_expose_their_convolution_activations(name: str, mnist_sample: Mnist) -> None:
    card = read_card(MODELS_DIR / name)
    session = ort.InferenceSession(str(MODELS_DIR / name / "model.onnx"), providers=["CPUExecutionProvider"])
    layers = [a.name for a in card.activations]
    assert layers[:2] == ["conv1", "conv2"]
    outputs = session.run(layers, {"image": model_input(mnist_sample.test.images[:4])})
    for layer, maps in zip(card.activations, outputs, strict=True):
        assert list(maps.shape) == [4, *layer.shape]
        assert maps.min() >= 0


@pytest.mark.parametrize("name", ["lenet", "cnn"])
def test_the_cnns_tell_digits_from_non_digits(name: str, mnist_sample: Mnist) -> None:
    """The shipped sample's digits pass; non-digits from the evaluation generator (never trained on) are caught."""
    from training.nondigits import evaluation_set

    session = ort.InferenceSession(str(MODELS_DIR / name / "model.onnx"), providers=["CPUExecutionProvider"])
    threshold = read_card(MODELS_DIR / name).detector.threshold
    digits = session.run(["digit_score"], {"image": model_input(mnist_sample.test.images)})[0][:, 0]
    others = session.run(["digit_score"], {"image": model_input(evaluation_set(300)[0])})[0][:, 0]
    assert (digits < threshold).mean() <= 0.02
    assert (others < threshold).mean() >= 0.85


def test_probabilities_are_calibrated_logits(mnist_sample: Mnist) -> None:
    """What the graph returns is (1 - e) softmax(logits / T) + e / 10 with the card's T and e, for every model."""
    for name in ("svm", "softmax", "lenet", "cnn"):
        session = ort.InferenceSession(str(MODELS_DIR / name / "model.onnx"), providers=["CPUExecutionProvider"])
        logits, probabilities = session.run(
            ["logits", "probabilities"], {"image": model_input(mnist_sample.test.images)}
        )
        calibration = read_card(MODELS_DIR / name).calibration
        scaled = logits / calibration.temperature
        expected = np.exp(scaled - scaled.max(1, keepdims=True))
        expected = (1 - calibration.floor) * expected / expected.sum(1, keepdims=True) + calibration.floor / 10
        np.testing.assert_allclose(probabilities, expected, atol=1e-5)
