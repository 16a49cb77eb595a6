"""Fit how /read weighs a model's line reader against its reading graph, and how sure it then is of a number: the
card's `line_reader.weighing` (app.cards.LineWeighing). Fitted on numbers of MNIST *validation* digits, never a test
digit, which benchmarks.read_eval's sets are made of.

The numbers are written by training.numbers' two generators (photos and styles, each its own seed) and read as /read
reads them, twice:
1. The texts' weights. Every candidate (app.reading.line_candidates: the graph's text and the line reader's
   likeliest) comes with its features. A conditional logit (the softmax of the weighed features over one number's
   candidates) is fitted by Newton's method to pick the right text, with an L2 penalty. Numbers whose right text is
   not a candidate, or is the only one, teach nothing.
2. The confidence. Each number is read again with those weights, and the text read comes with what line_confidence
   weighs (app.reading.line_confidence_inputs). A logistic regression of whether that text is right is fitted the
   same way.

    python -m training weigh-lines --model cnn --data-dir ../shared/data/mnist   # ~10 min on 2 cores
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from app.cards import LineWeighing, ModelCard, read_card
from app.errors import ServiceError
from app.reading import (
    Candidate,
    digits_confidence,
    line_confidence_inputs,
    plan_upload,
    readings_to_weigh,
    text_log_likelihood,
)
from training import report
from training.data import Mnist
from training.numbers import Reader, Sample, calibration_error, written_numbers

Number = tuple[npt.NDArray[np.float64], int | None]  # the candidates' features, and the right one's row
FEATURES = 5  # per candidate: app.reading.Candidate.features
PROVISIONAL_CONFIDENCE = (1.0, 1.0, 0.0)  # stands in while the texts' weights are tried; its answers are unused


def candidates(read: Reader, sample: Sample) -> list[Candidate]:
    """The texts /read chooses among for the sample; none when it refuses the image or the model has no line reader."""
    try:
        plan = plan_upload(sample.image)
    except ServiceError:
        return []
    answers = read.answers(plan)
    return readings_to_weigh(plan, answers.logits, answers.piece_scores, answers.pairs, answers.line)[1]


def number_of(found: list[Candidate], text: str) -> Number:
    """The candidates' features, less any the line reader rules out (a text too long for its frames: log p = -inf),
    and the right text's row."""
    kept = [c for c in found if all(math.isfinite(f) for f in c.features)]
    features = np.array([c.features for c in kept], np.float64).reshape(len(kept), FEATURES)
    return features, next((i for i, c in enumerate(kept) if c.text == text), None)


def fitted(numbers: list[Number], l2: float, steps: int = 30) -> npt.NDArray[np.float64]:
    """The weights that maximise the log-likelihood of the right candidates, less l2 x |w|^2 (Newton's method: the
    problem is convex)."""
    taught = [(x, y) for x, y in numbers if y is not None and len(x) > 1]
    weights = np.zeros(FEATURES)
    for _ in range(steps):
        gradient, hessian = -2 * l2 * weights, -2 * l2 * np.eye(len(weights))
        for x, y in taught:
            scores = x @ weights
            p = np.exp(scores - scores.max())
            p /= p.sum()
            mean = p @ x
            gradient += x[y] - mean
            hessian -= (x * p[:, None]).T @ x - np.outer(mean, mean)
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if np.abs(step).max() < 1e-6:
            break
    return weights


def read_right(numbers: list[Number], weights: npt.ArrayLike) -> float:
    """The share of the numbers whose best-weighed candidate is the right text (none: wrong)."""
    w = np.asarray(weights, np.float64)
    return float(np.mean([y is not None and int(np.argmax(x @ w)) == y for x, y in numbers]))


def confidence_inputs(read: Reader, sample: Sample) -> tuple[tuple[float, float], bool] | None:
    """What line_confidence weighs for the text `read` reads, and whether that text is right; None when it reads
    none (the image refused, no digit) or reads it without its line reader."""
    try:
        plan = plan_upload(sample.image)
        answers = read.answers(plan)
        reading = read.resolved(plan, answers)
    except ServiceError:
        return None
    if answers.line is None:
        return None
    inputs = line_confidence_inputs(digits_confidence(reading.digits), text_log_likelihood(answers.line, reading.text))
    return inputs, reading.text == sample.text


def confidence_fitted(
    inputs: npt.NDArray[np.float64], right: npt.NDArray[np.bool_], l2: float, steps: int = 30
) -> npt.NDArray[np.float64]:
    """The logistic regression's weights (one per input, then a constant) that maximise the log-likelihood of
    `right`, less l2 x |w|^2 (Newton's method)."""
    x = np.column_stack([inputs, np.ones(len(inputs))])
    weights = np.zeros(x.shape[1])
    for _ in range(steps):
        p = confidences(inputs, weights)
        gradient = x.T @ (right - p) - 2 * l2 * weights
        hessian = -(x * (p * (1 - p))[:, None]).T @ x - 2 * l2 * np.eye(len(weights))
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if np.abs(step).max() < 1e-6:
            break
    return weights


def confidences(inputs: npt.NDArray[np.float64], weights: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """line_confidence's answers for the inputs under these weights."""
    x = np.column_stack([inputs, np.ones(len(inputs))])
    return 1 / (1 + np.exp(-(x @ np.asarray(weights, np.float64))))


def fit_weighing(
    read: Reader, samples: list[Sample], l2: float = 0.5, log: Callable[[str], None] = print
) -> LineWeighing:
    """Both fits on these numbers (the module's two steps), rounded to 3 decimals as the card keeps them."""
    numbers = [number_of(candidates(read, s), s.text) for s in samples]
    texts = tuple(round(float(w), 3) for w in fitted(numbers, l2))
    log(f"texts' weights {texts}: {read_right(numbers, texts):.2%} of {len(numbers):,} numbers chosen right")
    trial = LineWeighing.model_validate(
        {"texts": texts, "confidence": PROVISIONAL_CONFIDENCE, "numbers": 0, "read_right": 0, "calibration_error": 0}
    )
    weighed = read.weighed_by(trial)
    observed = [found for s in samples if (found := confidence_inputs(weighed, s)) is not None]
    inputs = np.array([x for x, _ in observed], np.float64).reshape(len(observed), 2)
    right = np.array([ok for _, ok in observed], bool)
    confidence = tuple(round(float(w), 3) for w in confidence_fitted(inputs, right, l2))
    error = calibration_error(confidences(inputs, confidence).tolist(), right.tolist())
    log(f"confidence {confidence}: calibration error {error:.4f} on {len(observed):,} numbers read")
    if not all(math.isfinite(w) for w in (*texts, *confidence)):
        raise ValueError("the fit diverged")
    return LineWeighing.model_validate(
        {
            "texts": texts,
            "confidence": confidence,
            "numbers": len(samples),
            "read_right": round(float(right.sum()) / len(samples), 5),
            "calibration_error": round(error, 5),
        }
    )


def weigh_lines(
    folder: Path,
    data: Mnist,
    *,
    photos: int = 3000,
    styles: int = 1500,
    seed: int = 11,
    log: Callable[[str], None] = print,
) -> ModelCard:
    """Fit the weighing of the model in `folder` on numbers of its validation digits and record it in its card."""
    card = read_card(folder)
    if card.line_reader is None:
        raise ValueError(f"{card.name} has no line reader to weigh")
    written = written_numbers(data.validation.images, data.validation.labels, photos, styles, seed)
    weighing = fit_weighing(Reader.of(folder), [*written[0], *written[1]], log=log)
    updated = card.model_copy(update={"line_reader": card.line_reader.model_copy(update={"weighing": weighing})})
    report.write_card(folder, updated)
    return updated
