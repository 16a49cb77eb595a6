"""Calibrated probabilities, fitted on the validation split: a temperature T and, where T alone cannot meet the
target, a floor e: probabilities = (1 - e) * softmax(logits / T) + e / 10.

Folded into the exported graph by training.trust; `logits` stay raw. Both keep every answer's digit (the floor
lifts every class by the same amount). The floor bounds how wrong a confident answer can be: the softmax
regression's NLL is dominated by a few confidently wrong digits, and the floor lets T sharpen the rest (its ECE
needs T < 0.95) without paying for those few (alone, the ECE's T raised its test NLL from 0.2655 to 0.2702).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.cards import Calibration, CalibrationMetrics

BINS = 15
TARGET_ECE = 0.01
# Validation ECE asked of a calibrator before it is chosen: half the target, because the ECE of 5,000 validation
# images moves by a few tenths of a point from one sample to another and the target is judged on the test set.
MARGIN_ECE = TARGET_ECE / 2
FLOORS = (0.0, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2)


@dataclass(frozen=True)
class Fit:
    temperature: float
    floor: float
    criterion: str  # how it was chosen, for the card


def softmax(logits: npt.NDArray[np.floating], temperature: float = 1.0) -> npt.NDArray[np.float64]:
    scaled = logits.astype(np.float64) / temperature
    shifted = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def calibrated(logits: npt.NDArray[np.floating], temperature: float, floor: float = 0.0) -> npt.NDArray[np.float64]:
    """What the exported graph's `probabilities` output computes."""
    return (1.0 - floor) * softmax(logits, temperature) + floor / logits.shape[1]


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


def fit_calibration(logits: npt.NDArray[np.floating], labels: npt.NDArray[np.integer]) -> Fit:
    """The temperature minimising the validation NLL, if it meets the ECE target there (the CNNs).

    Otherwise a (T, floor) pair from a grid around it, among those whose validation NLL is no worse than the raw
    model's: the lowest NLL among those with a validation ECE within the margin (the softmax regression), or,
    if none reaches it, the lowest ECE (the SVM: its hinge scores are no log-odds)."""
    by_nll = fit_temperature(logits, labels)
    ece = calibration_metrics(softmax(logits, by_nll), labels).ece
    if ece <= TARGET_ECE:
        return Fit(by_nll, 0.0, "NLL")
    raw_nll = calibration_metrics(softmax(logits), labels).nll
    scored = [
        (calibration_metrics(calibrated(logits, float(t), floor), labels), float(t), floor)
        for t in by_nll * np.exp(np.linspace(-1.0, 1.0, 81))
        for floor in FLOORS
    ]
    allowed = [s for s in scored if s[0].nll <= raw_nll]
    within = [s for s in allowed if s[0].ece <= MARGIN_ECE]
    why = f"the NLL's T = {by_nll:.3g} alone left the validation ECE at {ece:.2%}"
    if within:
        _, t, floor = min(within, key=lambda s: s[0].nll)
        return Fit(t, floor, f"NLL among (T, floor) with a validation ECE <= {MARGIN_ECE:.1%} ({why})")
    _, t, floor = min(allowed or scored, key=lambda s: s[0].ece)
    return Fit(t, floor, f"ECE among (T, floor) with a validation NLL no worse than the raw model's ({why})")


def calibration_record(
    fit: Fit, logits: npt.NDArray[np.floating], labels: npt.NDArray[np.integer], validation_images: int
) -> Calibration:
    """The card's section: the calibrator, and the test metrics before and after."""
    return Calibration(
        method="temperature_and_floor" if fit.floor else "temperature",
        temperature=round(fit.temperature, 6),
        floor=fit.floor,
        fitted_on=f"validation split ({validation_images:,} images), minimising the {fit.criterion}",
        before=calibration_metrics(softmax(logits), labels),
        after=calibration_metrics(calibrated(logits, fit.temperature, fit.floor), labels),
    )
