"""Calibrated probabilities: one temperature T per model, fitted on the validation split.

Folded into the exported graph by training.trust: probabilities = softmax(logits / T); `logits` stay raw.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from app.cards import Calibration, CalibrationMetrics

BINS = 15
TARGET_ECE = 0.01


def softmax(logits: npt.NDArray[np.floating], temperature: float = 1.0) -> npt.NDArray[np.float64]:
    scaled = logits.astype(np.float64) / temperature
    shifted = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def calibration_metrics(probabilities: npt.NDArray[np.floating], labels: npt.NDArray[np.integer]) -> CalibrationMetrics:
    """ECE over 15 equal-width confidence bins, NLL and Brier score."""
    confidence, predicted = probabilities.max(axis=1), probabilities.argmax(axis=1)
    correct = (predicted == labels).astype(np.float64)
    bins = np.minimum((confidence * BINS).astype(int), BINS - 1)
    gaps = [abs(correct[bins == b].mean() - confidence[bins == b].mean()) * (bins == b).mean() for b in set(bins)]
    truth = np.eye(probabilities.shape[1])[labels]
    return CalibrationMetrics(
        ece=round(float(sum(gaps)), 5),
        nll=round(float(-np.log(np.maximum(probabilities[np.arange(len(labels)), labels], 1e-12)).mean()), 5),
        brier=round(float(((probabilities - truth) ** 2).sum(axis=1).mean()), 5),
        mean_confidence=round(float(confidence.mean()), 5),
        accuracy=round(float(correct.mean()), 5),
    )


def fit_temperature(logits: npt.NDArray[np.floating], labels: npt.NDArray[np.integer]) -> float:
    """The temperature minimising the NLL: golden-section search on log T (the NLL is convex in 1/T)."""

    def nll(log_t: float) -> float:
        p = softmax(logits, float(np.exp(log_t)))[np.arange(len(labels)), labels]
        return float(-np.log(np.maximum(p, 1e-300)).mean())

    low, high, ratio = -4.0, 4.0, (np.sqrt(5) - 1) / 2
    for _ in range(60):
        a, b = high - ratio * (high - low), low + ratio * (high - low)
        low, high = (low, b) if nll(a) < nll(b) else (a, high)
    return float(np.exp((low + high) / 2))


def fit_calibration(logits: npt.NDArray[np.floating], labels: npt.NDArray[np.integer]) -> tuple[float, str]:
    """The temperature and how it was chosen: the one minimising the validation NLL; where that one leaves the
    validation ECE above the target (the SVM: its hinge scores are no log-odds), the one minimising the validation
    ECE among temperatures within a factor e of it. One temperature keeps every answer's digit."""
    by_nll = fit_temperature(logits, labels)
    ece = calibration_metrics(softmax(logits, by_nll), labels).ece
    if ece <= TARGET_ECE:
        return by_nll, "NLL"
    grid = by_nll * np.exp(np.linspace(-1.0, 1.0, 401))
    by_ece = min(grid, key=lambda t: calibration_metrics(softmax(logits, float(t)), labels).ece)
    return float(by_ece), f"ECE (the NLL's T = {by_nll:.3g} left the validation ECE at {ece:.2%})"


def calibration_record(
    temperature: float, criterion: str, logits: npt.NDArray[np.floating], labels: npt.NDArray[np.integer],
    validation_images: int,
) -> Calibration:  # fmt: skip
    """The card's section: the temperature, and the test metrics before and after."""
    return Calibration(
        temperature=round(temperature, 6),
        fitted_on=f"validation split ({validation_images:,} images), minimising the {criterion}",
        before=calibration_metrics(softmax(logits), labels),
        after=calibration_metrics(softmax(logits, temperature), labels),
    )
