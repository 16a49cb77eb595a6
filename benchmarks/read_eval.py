"""Accuracy of reading whole numbers (app.reading), on numbers composed from MNIST *test* digits only.

Two sets, each from its own generator and seed (training.numbers, which describes them): "photos" (photo_number,
about a third of them with a touching pair) and "styles" (styled_number, built differently, no touching digits).
With set 1 comes its ceiling: as many single digits photographed the same way. What the classifier reads right of
those bounds the whole-number accuracy that any segmenter reaches on set 1.

    python -m benchmarks.read_eval --seed 1 --count 1000      # or: make evaluate-read

Develop on --seed 0 (the dev seed); report on other seeds. Figures go to stdout and, with --json, to a file. The
model's pair reader (pair.onnx) and line reader (line.onnx) are used when it has them, as /read uses them; --no-pairs
and --no-lines read without them.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from app.errors import ServiceError
from app.reading import Reading
from training.data import load_split, resolve_data_dir
from training.numbers import Reader, Sample, calibration, photo_number, styled_number

ROOT = Path(__file__).resolve().parents[1]


def failure_kind(expected: str, got: Reading | ServiceError) -> str:
    if isinstance(got, ServiceError):
        return f"error {got.code}"
    if len(got.text) < len(expected):
        return "digits merged or missed"
    if len(got.text) > len(expected):
        return "digit split or mark read as digit"
    return "digit misread"


def edits(read: str, truth: str) -> int:
    """The fewest digits inserted, left out or changed that turn `read` into `truth` (the Levenshtein distance)."""
    row = list(range(len(truth) + 1))  # edits from the first i digits read to each prefix of the truth
    for i, got in enumerate(read, 1):
        diagonal, row[0] = row[0], i
        for j, want in enumerate(truth, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (got != want))
    return row[-1]


def evaluate(samples: list[Sample], read: Reader) -> dict[str, object]:
    right = digits_right = digits_total = digit_edits = 0
    confidences: list[float] = []
    outcomes: list[bool] = []
    touching = touching_right = 0
    kinds: Counter[str] = Counter()
    examples: list[str] = []
    for sample in samples:
        got = read(sample)
        text = got.text if isinstance(got, Reading) else ""
        ok = text == sample.text
        right += ok
        confidences.append(got.confidence if isinstance(got, Reading) else 0.0)
        outcomes.append(ok)
        touching += sample.touching
        touching_right += sample.touching and ok
        digits_total += len(sample.text)
        digit_edits += edits(text, sample.text)
        if len(text) == len(sample.text):
            digits_right += sum(a == b for a, b in zip(text, sample.text, strict=True))
        else:  # a merge or a split costs the digits after it
            prefix = next(
                (i for i, (a, b) in enumerate(zip(text, sample.text, strict=False)) if a != b),
                min(len(text), len(sample.text)),
            )
            digits_right += prefix
        if not ok:
            kinds[failure_kind(sample.text, got)] += 1
            if len(examples) < 12:
                examples.append(f"{sample.text} -> {text or got.code}")  # type: ignore[union-attr]
    return {
        "numbers": len(samples),
        "whole_number_accuracy": right / len(samples),
        "digit_accuracy": digits_right / digits_total,
        # OCR's character error rate: an inserted or lost digit is one error, not every digit after it as above
        "digit_error_rate": digit_edits / digits_total,
        "with_touching_pair": touching,
        "touching_accuracy": touching_right / touching if touching else None,
        "failures": dict(kinds.most_common()),
        "examples": examples,
        **calibration(confidences, outcomes),
    }


def ceiling(digits: list[Sample], read: Reader) -> dict[str, float]:
    """Single digits photographed as set 1 photographs numbers, read as /read reads them: what the classifier alone
    gets right under this rendering, and the whole-number accuracy a perfect segmenter would then reach on 2-8
    digits (their count is uniform)."""
    accuracy = float(np.mean([getattr(read(sample), "text", "") == sample.text for sample in digits]))
    return {
        "single_digits": len(digits),
        "single_digit_accuracy": accuracy,
        "whole_number_ceiling": float(np.mean([accuracy**n for n in range(2, 9)])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1, help="generator seed (0 is the dev seed; report on others)")
    parser.add_argument("--count", type=int, default=1000, help="numbers in the photos set (styles gets a third)")
    parser.add_argument("--model", default="cnn", help="model under models/ to read with")
    parser.add_argument("--no-pairs", action="store_true", help="read without the model's pair reader (pair.onnx)")
    parser.add_argument("--no-lines", action="store_true", help="read without the model's line reader (line.onnx)")
    parser.add_argument("--data-dir", default=None, help="MNIST directory (default $MNIST_DIR or ./data/mnist)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args()
    test, _ = load_split(resolve_data_dir(args.data_dir), "t10k", verify=False)  # test digits only
    read = Reader.of(ROOT / "models" / args.model, pairs=not args.no_pairs, lines=not args.no_lines)
    photos_rng, styles_rng = np.random.default_rng([args.seed, 1]), np.random.default_rng([args.seed, 2])
    single_rng = np.random.default_rng([args.seed, 3])
    started = time.perf_counter()
    photos = [photo_number(test.images, test.labels, photos_rng) for _ in range(args.count)]
    styles = [styled_number(test.images, test.labels, styles_rng) for _ in range(max(1, args.count // 3))]
    singles = [photo_number(test.images, test.labels, single_rng, count=1) for _ in range(args.count)]
    results = {
        "seed": args.seed,
        "model": args.model,
        "pair_reader": read.pairs is not None,
        "line_reader": read.lines is not None,
        "photos": evaluate(photos, read) | ceiling(singles, read),
        "styles": evaluate(styles, read),
    }
    results["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
