from __future__ import annotations

import numpy as np
import pytest

from training.config import SOFTMAX, SVM
from training.data import Mnist
from training.linear import LOSSES, design_matrix, softmax_loss_and_grad, svm_loss_and_grad, train_linear


def numerical_gradient(loss, W: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences, one weight at a time."""
    grad = np.zeros_like(W)
    for index in np.ndindex(W.shape):
        saved = W[index]
        W[index] = saved + h
        plus = loss(W)
        W[index] = saved - h
        minus = loss(W)
        W[index] = saved
        grad[index] = (plus - minus) / (2 * h)
    return grad


@pytest.mark.parametrize("name", ["svm", "softmax"])
@pytest.mark.parametrize("reg", [0.0, 0.1])
def test_gradient_matches_finite_differences(name: str, reg: float) -> None:
    rng = np.random.default_rng(1)
    X = np.hstack([rng.standard_normal((12, 6)), np.ones((12, 1))])
    y = rng.integers(0, 4, 12)
    W = 0.1 * rng.standard_normal((7, 4))
    loss_fn = LOSSES[name]
    _, analytic = loss_fn(W, X, y, reg)
    numeric = numerical_gradient(lambda w: loss_fn(w, X, y, reg)[0], W)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7)


def test_softmax_is_stable_for_huge_scores() -> None:
    X = np.array([[1e4, 1.0], [-1e4, 1.0]])
    W = np.array([[1.0, -1.0], [0.0, 0.0]])
    loss, grad = softmax_loss_and_grad(W, X, np.array([0, 1]), 0.0)
    assert np.isfinite(loss)
    assert np.all(np.isfinite(grad))


def test_svm_loss_is_zero_when_every_margin_is_met() -> None:
    X = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    W = np.array([[5.0, 0.0], [0.0, 5.0], [0.0, 0.0]])
    loss, grad = svm_loss_and_grad(W, X, np.array([0, 1]), 0.0)
    assert loss == 0.0
    assert not grad.any()


@pytest.mark.parametrize("name", ["svm", "softmax"])
def test_regularisation_spares_the_bias_row(name: str) -> None:
    rng = np.random.default_rng(2)
    X, y, W = (
        np.hstack([rng.standard_normal((5, 3)), np.ones((5, 1))]),
        rng.integers(0, 2, 5),
        rng.standard_normal((4, 2)),
    )
    loss_fn = LOSSES[name]
    (plain, plain_grad), (penalised, penalised_grad) = loss_fn(W, X, y, 0.0), loss_fn(W, X, y, 0.5)
    assert penalised - plain == pytest.approx(0.5 * np.sum(W[:-1] ** 2))
    np.testing.assert_allclose(penalised_grad[:-1] - plain_grad[:-1], W[:-1])
    np.testing.assert_array_equal(penalised_grad[-1], plain_grad[-1])


def test_design_matrix_centres_and_appends_ones() -> None:
    images = np.full((2, 28, 28), 255, dtype=np.uint8)
    X = design_matrix(images, mean=np.full(784, 0.5), pixel_scale=1.0)
    assert X.shape == (2, 785)
    np.testing.assert_allclose(X[:, :-1], 0.5)
    np.testing.assert_allclose(X[:, -1], 1.0)


@pytest.mark.parametrize("config", [SVM, SOFTMAX], ids=["svm", "softmax"])
def test_training_learns_the_sample(config, mnist_sample: Mnist) -> None:
    from dataclasses import replace

    model = train_linear(replace(config, iterations=600), mnist_sample.train.images, mnist_sample.train.labels)
    accuracy = (model.predict(mnist_sample.test.images) == mnist_sample.test.labels).mean()
    assert accuracy > 0.75  # 500 training images; a linear model gets ~80%
    assert model.weights.shape == (784, 10)
