"""Fit how /read weighs the line reader against the graph (app.reading.LINE_WEIGHING), on numbers of MNIST
*validation* digits: never a test digit, which benchmarks.read_eval's sets are made of.

Each number is written by read_eval's two generators (photos and styles, their own seeds) and read as /read reads it
up to the choice of text: every candidate (app.reading.line_candidates: the graph's text and the line reader's
likeliest) with its features. A conditional logit (the softmax of the weighed features over one number's
candidates) is fitted by Newton's method to pick the right text, with an L2 penalty; numbers whose right text is
not a candidate, or is the only one, teach nothing. It prints the fitted weights and how many numbers each choice
reads right, against the committed LINE_WEIGHING.

    python -m benchmarks.line_weighing            # ~6 min on 2 cores; then check on read_eval's dev seeds
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import numpy.typing as npt

from app.errors import ServiceError
from app.reading import LINE_WEIGHING, Candidate, graph_path, line_candidates, path_text, plan_upload, scored_graph
from benchmarks.read_eval import Reader, Sample, photo_number, styled_number
from training.data import load_mnist

Number = tuple[npt.NDArray[np.float64], int | None]  # the candidates' features, and the right one's row


def candidates(read: Reader, sample: Sample) -> list[Candidate]:
    """The texts /read would choose among for the sample, none when it refuses the image or has no line reader."""
    try:
        plan = plan_upload(sample.image)
    except ServiceError:
        return []
    answers = read.answers(plan)
    if answers.line is None:
        return []
    scored, reads = scored_graph(plan, answers.logits, answers.piece_scores, answers.pairs)
    return line_candidates(plan, scored, reads, answers.line, path_text(graph_path(plan, scored, reads)))


def number_of(found: list[Candidate], text: str) -> Number:
    """The candidates' features, less any the line reader rules out (a text too long for its frames: log p = -inf),
    and the right text's row."""
    kept = [c for c in found if all(math.isfinite(f) for f in c.features)]
    features = np.array([c.features for c in kept], np.float64).reshape(len(kept), len(LINE_WEIGHING))
    return features, next((i for i, c in enumerate(kept) if c.text == text), None)


def fitted(numbers: list[Number], l2: float, steps: int = 30) -> npt.NDArray[np.float64]:
    """The weights that maximise the log-likelihood of the right candidates, less l2 x |w|^2 (Newton's method: the
    problem is convex)."""
    taught = [(x, y) for x, y in numbers if y is not None and len(x) > 1]
    weights = np.array(LINE_WEIGHING, np.float64)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=3000, help="numbers from read_eval's photos generator")
    parser.add_argument("--styles", type=int, default=1500, help="numbers from its styles generator")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--l2", type=float, default=0.5, help="penalty on the squared weights")
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--data-dir", default=None, help="MNIST directory (default $MNIST_DIR or ./data/mnist)")
    args = parser.parse_args()
    digits = load_mnist(args.data_dir, verify=False).validation
    read = Reader.of(args.model)
    photos_rng, styles_rng = np.random.default_rng([args.seed, 1]), np.random.default_rng([args.seed, 2])
    samples = [photo_number(digits.images, digits.labels, photos_rng) for _ in range(args.photos)]
    samples += [styled_number(digits.images, digits.labels, styles_rng) for _ in range(args.styles)]
    numbers = [number_of(candidates(read, s), s.text) for s in samples]
    weights = fitted(numbers, args.l2)
    result = {
        "numbers": len(numbers),
        "taught": sum(y is not None and len(x) > 1 for x, y in numbers),
        "right_among_candidates": float(np.mean([y is not None for _, y in numbers])),
        "read_right_committed": read_right(numbers, LINE_WEIGHING),
        "read_right_fitted": read_right(numbers, weights),
        "fitted": [round(float(w), 3) for w in weights],
        "committed": list(LINE_WEIGHING),
    }
    print(json.dumps(result, indent=2))
    if not all(math.isfinite(w) for w in weights):
        raise SystemExit("the fit diverged")


if __name__ == "__main__":
    main()
