"""Faithfulness of every explanation method on every model, written into the cards (`make evaluate-explain`).

- Deletion: on MNIST test digits, set to 0 the 16 pixels with the highest attribution, or 16 random ink pixels, and
  compare the mean drops of the target's probability (target: the predicted digit); and the area under the
  target's probability as pixels are deleted in attribution order, 49 at a time to all 784, against a random order.
- Sanity (Adebayo et al. 2018): the same maps from the model with its weights replaced by random ones of the same
  shape and spread (and explain.onnx rebuilt from that model); Spearman correlation with the trained maps over the
  ink pixels. A method
  whose maps stay correlated (>= 0.5), or whose deletion area is not below random, is not offered.

Runs the service's own code (app.explain) on ONNX Runtime; no TensorFlow.
"""

from __future__ import annotations

import argparse
import gzip
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from app.cards import INPUT_NAME, MethodFaithfulness, ModelCard, read_card
from app.explain import Explanation, Map, Method, Options, explain, offered_methods, session_forward
from training.gradient_graph import explain_model
from training.report import write_card

TOP = 16
CURVE_STEP = 49  # pixels deleted between two points of the curve: 16 points to all 784
SEED = 2018  # never used by training


def read_test_digits(data_dir: Path, count: int) -> npt.NDArray[np.float32]:
    """The first `count` MNIST test digits, (N, 28, 28) in [0, 1]."""
    raw = gzip.decompress((data_dir / "t10k-images-idx3-ubyte.gz").read_bytes())
    return (np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)[:count] / 255.0).astype(np.float32)


def session(model: onnx.ModelProto | Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def probabilities(model: ort.InferenceSession, images: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    result: npt.NDArray[np.float32] = model.run(["probabilities"], {INPUT_NAME: images[..., np.newaxis]})[0]
    return result


def deleted(image: Map, order: npt.NDArray[np.intp], counts: list[int]) -> npt.NDArray[np.float32]:
    """(len(counts), 28, 28): the image with its first `count` pixels of `order` set to 0, for each count."""
    copies = np.repeat(image.reshape(1, -1), len(counts), axis=0)
    for row, count in enumerate(counts):
        copies[row, order[:count]] = 0.0
    return copies.reshape(-1, 28, 28)


def deletion_scores(
    model: ort.InferenceSession, image: Map, attribution: Map, target: int, rng: np.random.Generator
) -> tuple[float, float, float, float]:
    """(drop for the top 16, drop for 16 random ink pixels, deletion area by attribution, by random order)."""
    ink = rng.permutation(np.flatnonzero(image.reshape(-1) > 0))
    by_attribution = np.argsort(-attribution.reshape(-1), kind="stable")
    at_random = rng.permutation(image.size)  # the curve's reference, as in RISE (Petsiuk et al. 2018): any pixel
    curve = list(range(0, image.size + 1, CURVE_STEP))
    batch = np.concatenate(
        [
            image[np.newaxis],
            deleted(image, by_attribution, [TOP]),
            deleted(image, ink, [TOP]),
            deleted(image, by_attribution, curve),
            deleted(image, at_random, curve),
        ]
    )
    p = probabilities(model, batch)[:, target]
    points = len(curve)
    return float(p[0] - p[1]), float(p[0] - p[2]), float(np.mean(p[3 : 3 + points])), float(np.mean(p[3 + points :]))


def randomised(model: onnx.ModelProto, rng: np.random.Generator) -> onnx.ModelProto:
    """A copy with every weight tensor (2-D or more) and every bias of a weight replaced by normal noise of the same
    shape, mean and spread. A linear model's `weights_by_class` (its evidence output) follows its `weights`."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    values = {}
    for tensor in copy.graph.initializer:
        array = numpy_helper.to_array(tensor)
        if array.dtype == np.float32 and array.ndim >= 2:
            noise = rng.normal(array.mean(), array.std() + 1e-8, array.shape).astype(np.float32)
            values[tensor.name] = noise
            tensor.CopyFrom(numpy_helper.from_array(noise, tensor.name))
    if "weights_by_class" in values and "weights" in values:
        tied = values["weights"].T[np.newaxis].copy()  # (1, 10, 784)
        for tensor in copy.graph.initializer:
            if tensor.name == "weights_by_class":
                tensor.CopyFrom(numpy_helper.from_array(tied, tensor.name))
    return copy


def spearman(a: Map, b: Map, where: npt.NDArray[np.bool_]) -> float:
    """Rank correlation over the pixels `where`: the ink, since integrated gradients (input times gradient) are 0
    off the ink for any weights, and those ties alone would correlate any two maps."""
    ranks = [np.argsort(np.argsort(m[where], kind="stable"), kind="stable").astype(np.float64) for m in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def evaluate_model(folder: Path, images: npt.NDArray[np.float32], sanity_count: int) -> dict[str, MethodFaithfulness]:
    card = read_card(folder)
    assert card.explain is not None, f"{folder}: run `python -m training export-explain` first"
    model, explainer = session(folder / card.file), session(folder / card.explain.file)
    rng = np.random.default_rng(SEED)
    random_model = randomised(onnx.load(folder / card.file), rng)
    random_session, random_explainer = session(random_model), session(explain_model(random_model)[0])
    targets = np.argmax(probabilities(model, images), axis=1)
    results = {}
    for method in _all_methods(card):
        rows, correlations, errors, started = [], [], [], time.perf_counter()
        for index, (image, target) in enumerate(zip(images, targets, strict=True)):
            result = _explained(card, model, explainer, image, method, int(target))
            rows.append(deletion_scores(model, image, result.attribution, int(target), rng))
            if result.completeness_error is not None:
                errors.append(result.completeness_error)
            if index < sanity_count:
                noise = _explained(card, random_session, random_explainer, image, method, int(target)).attribution
                correlations.append(spearman(result.attribution, noise, image > 0))
        top, rand, area, random_area = np.mean(rows, axis=0)
        corr = float(np.mean(correlations))
        results[method] = MethodFaithfulness(
            deletion_ratio=round(float(top / max(rand, 1e-9)), 2),
            deletion_area=round(float(area), 4),
            random_area=round(float(random_area), 4),
            randomised_rank_correlation=round(corr, 3),
            offered=bool(area < random_area and corr < 0.5),
            median_completeness_error=round(float(np.median(errors)), 4) if errors else None,
            complete_within_1_percent=round(float(np.mean(np.array(errors) <= 0.01)), 3) if errors else None,
        )
        completeness = (
            f"  completeness error median {np.median(errors):.2%}, within 1% on {np.mean(np.array(errors) <= 0.01):.0%}"
            if errors
            else ""
        )
        print(
            f"{card.name:<8}{method:<22}{results[method].deletion_ratio:>8.1f}x  area {area:.3f} vs random "
            f"{random_area:.3f}  randomised rank correlation {corr:.3f}{completeness}"
            f"  ({time.perf_counter() - started:.0f} s)"
        )
    return results


def _all_methods(card: ModelCard) -> list[Method]:
    kinds: list[Method] = (
        ["integrated_gradients", "occlusion", "gradcam"]
        if card.kind == "cnn"
        else ["exact", "integrated_gradients", "occlusion"]
    )
    return kinds


def _explained(
    card: ModelCard,
    model: ort.InferenceSession,
    explainer: ort.InferenceSession,
    image: Map,
    method: Method,
    target: int,
) -> Explanation:
    return explain(
        card=card,
        forward=session_forward(model),
        explainer=explainer,
        image=image,
        method=method,
        target=target,
        options=Options(),
    )


def record(folder: Path, results: dict[str, MethodFaithfulness], count: int, sanity_count: int) -> ModelCard:
    """The figures written into the card; the methods offered are those that passed, in the card's order."""
    card = read_card(folder)
    assert card.explain is not None
    order = [m for m in _all_methods(card) if results[m].offered]
    setup = (
        f"{count} MNIST test digits (the first), target = predicted digit; sanity on the first {sanity_count};"
        f" default settings {Options()}; python -m benchmarks.explain_eval"
    )
    explain_section = card.explain.model_copy(
        update={"faithfulness": results, "methods": order, "faithfulness_setup": setup}
    )
    updated = card.model_copy(update={"explain": explain_section})
    write_card(folder, updated)
    offered_methods(updated, None)  # the card still validates for the service
    return updated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data/mnist"), help="MNIST IDX files")
    parser.add_argument("--models-dir", type=Path, default=Path("models"), help="models and cards")
    parser.add_argument("--model", action="append", help="a model to evaluate (repeatable; default: all four)")
    parser.add_argument("--count", type=int, default=1000, help="test digits for the deletion test")
    parser.add_argument("--sanity-count", type=int, default=200, help="test digits for the randomisation check")
    parser.add_argument("--dry-run", action="store_true", help="print the figures, leave the cards alone")
    args = parser.parse_args()
    images = read_test_digits(args.data_dir, args.count)
    for name in args.model or ["cnn", "lenet", "softmax", "svm"]:
        results = evaluate_model(args.models_dir / name, images, args.sanity_count)
        if not args.dry_run:
            record(args.models_dir / name, results, args.count, min(args.sanity_count, args.count))


if __name__ == "__main__":
    main()
