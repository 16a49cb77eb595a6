"""The notebook's linear classifiers in NumPy: a multiclass SVM and softmax regression.

Both work on flattened, mean-subtracted pixels with the bias trick (a constant 1 appended to every row), so
W has shape (D + 1, C) and its last row is the bias, which is not regularised.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from training.config import LinearConfig

Array = npt.NDArray[np.float64]
Labels = npt.NDArray[np.integer]
LossFn = Callable[[Array, Array, Labels, float], tuple[float, Array]]


def _l2(W: Array, reg: float) -> tuple[float, Array]:
    """The L2 penalty on the weights (bias row excluded) and its gradient."""
    weights = W[:-1]
    grad = np.zeros_like(W)
    grad[:-1] = 2 * reg * weights
    return float(reg * np.sum(weights * weights)), grad


def svm_loss_and_grad(W: Array, X: Array, y: Labels, reg: float) -> tuple[float, Array]:
    """Multiclass hinge loss (margin 1) averaged over the batch, plus L2; X is (N, D+1), W is (D+1, C)."""
    n = X.shape[0]
    rows = np.arange(n)
    scores = X @ W  # (N, C)
    margins = np.maximum(0.0, scores - scores[rows, y][:, None] + 1.0)
    margins[rows, y] = 0.0
    positive = (margins > 0).astype(X.dtype)  # (N, C)
    positive[rows, y] = -positive.sum(axis=1)
    penalty, penalty_grad = _l2(W, reg)
    return float(margins.sum() / n) + penalty, X.T @ positive / n + penalty_grad


def softmax_loss_and_grad(W: Array, X: Array, y: Labels, reg: float) -> tuple[float, Array]:
    """Cross-entropy of softmax(X @ W) averaged over the batch, plus L2; stable for any score magnitude."""
    n = X.shape[0]
    rows = np.arange(n)
    scores = X @ W
    shifted = scores - scores.max(axis=1, keepdims=True)  # exp() never overflows
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    probs = np.exp(log_probs)
    probs[rows, y] -= 1.0
    penalty, penalty_grad = _l2(W, reg)
    return float(-log_probs[rows, y].mean()) + penalty, X.T @ probs / n + penalty_grad


LOSSES: dict[str, LossFn] = {"svm": svm_loss_and_grad, "softmax": softmax_loss_and_grad}


@dataclass
class LinearModel:
    """A trained linear classifier: scores = (pixels * scale - mean) @ weights + bias."""

    weights: npt.NDArray[np.float32]  # (784, 10)
    bias: npt.NDArray[np.float32]  # (10,)
    mean: npt.NDArray[np.float32]  # (784,), in the training pixel scale
    pixel_scale: float
    history: list[float] = field(default_factory=list)
    train_seconds: float = 0.0

    def scores(self, images: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """(N, 28, 28) uint8 -> (N, 10) class scores."""
        x = images.reshape(len(images), -1).astype(np.float32) * np.float32(self.pixel_scale / 255.0)
        return (x - self.mean) @ self.weights + self.bias

    def predict(self, images: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
        return self.scores(images).argmax(axis=1)


def design_matrix(images: npt.NDArray[np.uint8], mean: Array, pixel_scale: float) -> Array:
    """(N, 28, 28) uint8 -> (N, 785): scaled, mean-subtracted pixels and a trailing 1 (the bias trick)."""
    x = images.reshape(len(images), -1).astype(np.float64) * (pixel_scale / 255.0) - mean
    return np.hstack([x, np.ones((len(x), 1))])


def train_linear(
    config: LinearConfig,
    images: npt.NDArray[np.uint8],
    labels: Labels,
    *,
    log: Callable[[str], None] | None = None,
) -> LinearModel:
    """Minibatch SGD with batches drawn at random, the step decayed once per epoch."""
    rng = np.random.default_rng(config.seed)
    mean = images.reshape(len(images), -1).mean(axis=0) * (config.pixel_scale / 255.0)
    X = design_matrix(images, mean, config.pixel_scale)
    W = 1e-4 * rng.standard_normal((X.shape[1], 10))
    loss_fn = LOSSES[config.loss]
    steps_per_epoch = max(1, len(X) // config.batch_size)
    learning_rate, history = config.learning_rate, []
    start = time.perf_counter()
    for step in range(config.iterations):
        batch = rng.integers(0, len(X), config.batch_size)
        loss, grad = loss_fn(W, X[batch], labels[batch], config.reg)
        W -= learning_rate * grad
        if (step + 1) % steps_per_epoch == 0:
            learning_rate *= config.lr_decay
            history.append(round(loss, 5))
            if log and len(history) % 10 == 0:
                log(f"{config.loss}: epoch {len(history)} loss {loss:.4f}")
    return LinearModel(
        weights=W[:-1].astype(np.float32),
        bias=W[-1].astype(np.float32),
        mean=mean.astype(np.float32),
        pixel_scale=config.pixel_scale,
        history=history,
        train_seconds=round(time.perf_counter() - start, 1),
    )
