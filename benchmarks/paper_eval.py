"""Accuracy of the default model on photos of digits written on paper, before and after paper cleaning (issue 20).

Renders two sets from MNIST TEST digits only, by two independent generators (benchmarks/paper_render.py), runs
each image through the service's preprocessing (app.preprocess.preprocess) and the committed model with ONNX
Runtime, and prints accuracy per set and per condition, with main's preprocessing ("before": paper cleaning
skipped) and with it ("after"). Also: blank pages of each set (no digit) answered blank_image, and the time of the
paper stage on a 4000x3000 JPEG.

    python -m benchmarks.paper_eval                      # the reported run: held-out seeds, 1,000 images per set
    python -m benchmarks.paper_eval --seed 1 --count 200 # development: another seed, never the reported one

Run it under the shared CPU lock: `flock /tmp/cpu.lock make evaluate-paper`.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import numpy as np
import onnxruntime as ort
from PIL import Image

from app.cards import read_card
from app.errors import BlankImage, ServiceError
from app.paper import paper_ink
from app.preprocess import Digit, decode_image, mnist_digit, model_input, preprocess
from benchmarks.paper_render import GENERATORS, Photo, blank_page, notebook_photo
from training.data import load_mnist

ROOT = Path(__file__).resolve().parents[1]
REPORTED_SEED = 20  # the held-out seed of the README's figures; develop with any other
BLANK_PAGES = 100  # of each set
BLANK_PAGES_DEV = 20  # with --count under 200


def before(image: Image.Image) -> Digit:
    """main's preprocessing: the same chain with the paper stage skipped."""
    with mock.patch("app.preprocess.paper_ink", return_value=None):
        return mnist_digit(image)


def prepared(photos: list[Photo], prepare: Callable[[Image.Image], Digit]) -> list[Digit | None]:
    """Each photo as the service prepares it (decode_image, then the chain: preprocess() does the same for any
    upload that is not a 28x28 PNG); None where the service refuses it (blank, or another input error)."""
    digits: list[Digit | None] = []
    for photo in photos:
        try:
            digits.append(prepare(decode_image(photo.data)))
        except ServiceError:
            digits.append(None)
    return digits


def predictions(session: ort.InferenceSession, digits: list[Digit | None]) -> list[int]:
    """The model's digit for each prepared image; -1 where there is none."""
    good = [digit for digit in digits if digit is not None]
    best = iter(session.run(["probabilities"], {"image": model_input(np.stack(good))})[0].argmax(axis=1).tolist())
    return [-1 if digit is None else next(best) for digit in digits]


def by_condition(photos: list[Photo], correct: list[bool]) -> dict[str, tuple[int, int]]:
    """(right, total) for each condition value, e.g. 'paper=ruled'."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for photo, right in zip(photos, correct, strict=True):
        for key, value in photo.conditions.items():
            counts[f"{key}={value}"][0] += int(right)
            counts[f"{key}={value}"][1] += 1
    return {key: (right, total) for key, (right, total) in sorted(counts.items())}


def blank_rates(
    photos: list[Photo], prepare: Callable[[Image.Image], Digit], session: ort.InferenceSession, threshold: float
) -> tuple[float, float]:
    """The shares of blank pages answered 422 blank_image, and answered blank_image or `is_digit: false` (the
    model's not-a-digit score under the card's threshold): the two answers the issue accepts for a blank page."""
    blank, kept = 0, []
    for photo in photos:
        try:
            kept.append(prepare(decode_image(photo.data)))
        except BlankImage:
            blank += 1
    scores = session.run(["digit_score"], {"image": model_input(np.stack(kept))})[0].ravel() if kept else []
    flagged = int(np.sum(np.asarray(scores) < threshold))
    return blank / len(photos), (blank + flagged) / len(photos)


def evaluate_set(
    name: str, session: ort.InferenceSession, threshold: float, digits: np.ndarray, labels: np.ndarray, seed: int
) -> dict:
    rng = np.random.default_rng([seed, list(GENERATORS).index(name)])
    photos = [GENERATORS[name](digit, rng) for digit in digits]
    blanks = [blank_page(name, rng) for _ in range(BLANK_PAGES if len(digits) >= 200 else BLANK_PAGES_DEV)]
    result: dict = {"set": name, "images": len(photos)}
    for stage, prepare in (("before", before), ("after", mnist_digit)):
        guesses = predictions(session, prepared(photos, prepare))
        correct = [guess == label for guess, label in zip(guesses, labels, strict=True)]
        refused, refused_or_flagged = blank_rates(blanks, prepare, session, threshold)
        result[stage] = {
            "accuracy": float(np.mean(correct)),
            "conditions": by_condition(photos, correct),
            "blank_pages_refused": refused,
            "blank_pages_refused_or_not_digits": refused_or_flagged,
        }
    return result


def print_set(result: dict) -> None:
    before_, after_ = result["before"], result["after"]
    print(f"\n{result['set']}: {result['images']} photos")
    print(f"  {'accuracy':<24}{before_['accuracy']:>8.1%}{after_['accuracy']:>8.1%}")
    for key, label in (
        ("blank_pages_refused", "blank: blank_image"),
        ("blank_pages_refused_or_not_digits", "blank: or not a digit"),
    ):
        print(f"  {label:<24}{before_[key]:>8.1%}{after_[key]:>8.1%}")
    for key, (right, total) in after_["conditions"].items():
        old = before_["conditions"][key][0] / total
        print(f"  {key:<24}{old:>8.1%}{right / total:>8.1%}   (n={total})")


def paper_stage_ms(repeats: int = 15) -> dict[str, float]:
    """Median times (ms) on a 4000x3000 JPEG, one thread: decoding as the service does (DCT scaling to ~1,000 px
    side, then reduction), the paper stage on that, and the whole of /predict's preparation to 28x28."""
    rng = np.random.default_rng(0)
    while True:  # a 12 MP photo from the notebook generator
        photo = notebook_photo(load_mnist(verify=False).test.images[0], rng)
        image = Image.open(io.BytesIO(photo.data))
        if image.width * image.height > 10_000_000:
            break
    big = image.resize((4000, 3000) if image.width > image.height else (3000, 4000))
    buffer = io.BytesIO()
    big.save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    decoded = decode_image(data)
    timers = {
        "decode (DCT scaling + reduction)": lambda: decode_image(data),
        "paper stage on the decoded image": lambda: paper_ink(decoded),
        "whole preparation to 28x28": lambda: preprocess(data),
    }
    return {name: _median_ms(run, repeats) for name, run in timers.items()}


def small_photo(digit: np.ndarray, *, size: tuple[int, int], spacing: int) -> bytes:
    """A JPEG of a dark digit on light paper under a gradient, squared every `spacing` px (0: plain paper)."""
    width, height = size
    page = np.full((height, width), 238, np.float32) * np.linspace(1.0, 0.85, width, dtype=np.float32)[None, :]
    if spacing:
        page[spacing // 2 :: spacing] *= 0.8
        page[:, spacing // 2 :: spacing] *= 0.8
    side = min(size) * 2 // 3
    alpha = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC), np.float32) / 255
    top, left = (height - side) // 2, (width - side) // 2
    page[top : top + side, left : left + side] *= 1 - 0.85 * alpha
    buffer = io.BytesIO()
    Image.fromarray(page.astype(np.uint8)).convert("RGB").save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def small_photos_ms(repeats: int = 50) -> dict[str, float]:
    """Median times (ms, one thread) of the whole preparation of small photos, with and without the paper stage:
    what the stage costs the uploads that are not phone photos of notebooks."""
    digit = load_mnist(verify=False).test.images[0]
    photos = {
        "300x300 plain paper": small_photo(digit, size=(300, 300), spacing=0),
        "128x96 squared paper": small_photo(digit, size=(128, 96), spacing=12),
    }
    timings = {}
    for name, data in photos.items():
        timings[f"{name}, main's chain"] = _median_ms(lambda data=data: before(decode_image(data)), repeats)
        timings[f"{name}, with the paper stage"] = _median_ms(lambda data=data: preprocess(data), repeats)
    return timings


def _median_ms(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def example_strip(photo: Photo) -> Image.Image:
    """The upload (thumbnail), then the 28x28 the model saw before and after, enlarged 4x with plain pixels."""
    upload = decode_image(photo.data).convert("RGB")
    upload.thumbnail((160, 160))
    strip = Image.new("RGB", (upload.width + 2 * 124, max(upload.height, 112)), "white")
    strip.paste(upload, (0, 0))
    for column, prepare in enumerate((before, mnist_digit)):
        try:
            digit = prepare(decode_image(photo.data))
        except ServiceError:
            digit = np.zeros((28, 28), np.uint8)
        strip.paste(
            Image.fromarray(digit).resize((112, 112), Image.Resampling.NEAREST), (upload.width + 12 + 124 * column, 0)
        )
    return strip


def write_examples(directory: Path, seed: int) -> None:
    """A few before/after strips for the README, from a development seed's photos."""
    test = load_mnist(verify=False).test
    directory.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(GENERATORS):
        rng = np.random.default_rng([seed, index])
        for number in range(3):
            example_strip(GENERATORS[name](test.images[number + 3 * index], rng)).save(
                directory / f"{name}-{number}.png", optimize=True
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000, help="photos per set (default 1000)")
    parser.add_argument("--seed", type=int, default=REPORTED_SEED, help="rendering seed; develop with another")
    parser.add_argument("--model", default="cnn", help="committed model to evaluate (default cnn)")
    parser.add_argument("--no-timing", action="store_true", help="skip the 12 MP timing (development runs)")
    parser.add_argument("--examples", type=Path, help="write before/after example strips to this folder and stop")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    if args.examples:
        write_examples(args.examples, args.seed)
        return
    ort_options = ort.SessionOptions()
    ort_options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(ROOT / "models" / args.model / "model.onnx"), ort_options)
    detector = read_card(ROOT / "models" / args.model).detector
    assert detector is not None, f"{args.model} has no not-a-digit detector"
    test = load_mnist(verify=False).test  # TEST digits only: the models never trained on them
    order = np.random.default_rng(args.seed).permutation(len(test.labels))
    results = []
    print(f"model {args.model}, seed {args.seed}; columns: before (main), after (paper cleaning)")
    for index, name in enumerate(GENERATORS):
        chosen = order[index * args.count : (index + 1) * args.count]  # the two sets share no digit
        results.append(
            evaluate_set(name, session, detector.threshold, test.images[chosen], test.labels[chosen], args.seed)
        )
        print_set(results[-1])
    timings = {} if args.no_timing else paper_stage_ms() | small_photos_ms()
    print("\n4000x3000 JPEG (median of 15) and small photos (median of 50), one core, ms:")
    for name, ms in timings.items():
        print(f"  {name:<44}{ms:>8.1f}")
    if args.json:
        args.json.write_text(json.dumps({"seed": args.seed, "sets": results, "timings_ms": timings}, indent=1))


if __name__ == "__main__":
    main()
