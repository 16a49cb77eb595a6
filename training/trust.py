"""Answers that can be trusted, added to an exported model without retraining it.

1. Calibration (training.calibration), folded into the graph: probabilities = (1 - e) * softmax(logits / T) + e / 10
   (e = 0 for most models); `logits` stay raw.
2. Not a digit: a small head on features the model already computes (a CNN's activation maps pooled by mean and
   max; a linear model's logits and centred pixels), trained in NumPy with outlier exposure on generated
   non-digits, exported as the output `digit_score` in [0, 1]. The model's own weights are frozen: its digits and
   accuracy do not change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image, ImageFilter

from app.cards import (
    INPUT_NAME,
    Detector,
    DetectorRates,
    ModelCard,
    TensorSpec,
)
from app.errors import ServiceError
from app.preprocess import mnist_digit
from training import nondigits
from training.calibration import Fit, calibrated, calibration_metrics, calibration_record, fit_calibration, softmax
from training.data import Mnist
from training.evaluate import session_for

PREFIX = "trust_"  # every node and initialiser this module adds; removed before adding them again
FEATURES, SCORE = f"{PREFIX}features", "digit_score"
DIGITS_FLAGGED_ON_VALIDATION = 0.005  # the threshold lets this share of validation digits through as "not a digit"
HIDDEN = 64
Floats = npt.NDArray[np.float32]


# --- the detector's features and head ---------------------------------------------------------------------------


def feature_nodes(proto: onnx.ModelProto, sources: list[str]) -> list[onnx.NodeProto]:
    """Nodes computing FEATURES: (N, 4D maps -> mean and max per channel | 2D tensors as they are), concatenated."""
    ranks = {o.name: len(o.type.tensor_type.shape.dim) for o in proto.graph.output}  # inner tensors: (N, F)
    nodes, parts = [], []
    for source in sources:
        if ranks.get(source) == 4:
            for op in ("ReduceMean", "ReduceMax"):
                name = f"{PREFIX}{source}_{op}"
                nodes.append(helper.make_node(op, [source], [name], name=name, axes=[2, 3], keepdims=0))
                parts.append(name)
        else:
            parts.append(source)
    nodes.append(helper.make_node("Concat", parts, [FEATURES], name=FEATURES, axis=1))
    return nodes


@dataclasses.dataclass
class Head:
    """standardise -> dense HIDDEN, ReLU -> dense 1 -> sigmoid; the standardisation is folded into the first layer."""

    w1: Floats
    b1: Floats
    w2: Floats
    b2: Floats

    def score(self, features: Floats) -> Floats:
        hidden = np.maximum(features @ self.w1 + self.b1, 0.0)
        logit = np.clip(hidden @ self.w2 + self.b2, -80.0, 80.0)  # float32 exp overflows past 88
        return (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)


def train_head(digits: Floats, others: Floats, seed: int, epochs: int = 40, batch: int = 256) -> Head:
    """Binary cross-entropy with Adam, digits = 1, non-digits = 0, both classes weighted equally."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([digits, others]).astype(np.float64)
    y = np.concatenate([np.ones(len(digits)), np.zeros(len(others))])
    weight = np.where(y == 1, len(x) / (2 * len(digits)), len(x) / (2 * len(others)))
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    x = (x - mean) / std
    params = [rng.normal(0, np.sqrt(2 / x.shape[1]), (x.shape[1], HIDDEN)), np.zeros(HIDDEN),
              rng.normal(0, np.sqrt(1 / HIDDEN), (HIDDEN, 1)), np.zeros(1)]  # fmt: skip
    moments = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
    steps = epochs * int(np.ceil(len(x) / batch))
    for step in range(1, steps + 1):
        pick = rng.integers(0, len(x), batch)
        grads = _head_gradients(params, x[pick], y[pick], weight[pick])
        rate = 2e-3 * 0.5 * (1 + np.cos(np.pi * step / steps))  # cosine decay
        for p, g, (m, v) in zip(params, grads, moments, strict=True):
            g = g + 1e-4 * p  # a little weight decay keeps the head smooth between the families it saw
            m[:] = 0.9 * m + 0.1 * g
            v[:] = 0.999 * v + 0.001 * g * g
            p -= rate * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
    w1, b1, w2, b2 = params
    return Head(
        w1=(w1 / std[:, None]).astype(np.float32),
        b1=(b1 - (mean / std) @ w1).astype(np.float32),
        w2=w2.astype(np.float32),
        b2=b2.astype(np.float32),
    )


def _head_gradients(params: list[np.ndarray], x: np.ndarray, y: np.ndarray, weight: np.ndarray) -> list[np.ndarray]:
    w1, b1, w2, b2 = params
    pre = x @ w1 + b1
    hidden = np.maximum(pre, 0.0)
    p = 1.0 / (1.0 + np.exp(-(hidden @ w2 + b2)[:, 0]))
    d_out = ((p - y) * weight / len(y))[:, None]  # d(weighted BCE)/d(logit)
    d_hidden = (d_out @ w2.T) * (pre > 0)
    return [x.T @ d_hidden, d_hidden.sum(axis=0), hidden.T @ d_out, d_out.sum(axis=0)]


def head_nodes(head: Head) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    names = {k: f"{PREFIX}{k}" for k in ("w1", "b1", "w2", "b2")}
    initializers = [numpy_helper.from_array(getattr(head, k), v) for k, v in names.items()]
    p = PREFIX
    nodes = [
        helper.make_node("MatMul", [FEATURES, names["w1"]], [f"{p}h1"], name=f"{p}h1"),
        helper.make_node("Add", [f"{p}h1", names["b1"]], [f"{p}h2"], name=f"{p}h2"),
        helper.make_node("Relu", [f"{p}h2"], [f"{p}h3"], name=f"{p}h3"),
        helper.make_node("MatMul", [f"{p}h3", names["w2"]], [f"{p}h4"], name=f"{p}h4"),
        helper.make_node("Add", [f"{p}h4", names["b2"]], [f"{p}h5"], name=f"{p}h5"),
        helper.make_node("Sigmoid", [f"{p}h5"], [SCORE], name=f"{p}score"),
    ]
    return nodes, initializers


# --- the graph --------------------------------------------------------------------------------------------------


def without(proto: onnx.ModelProto, prefix: str, outputs: tuple[str, ...]) -> onnx.ModelProto:
    """A copy without the nodes and initialisers named with `prefix`, and without those outputs."""
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    graph = proto.graph
    kept = [n for n in graph.node if not n.name.startswith(prefix)]
    del graph.node[:]
    graph.node.extend(kept)
    initializers = [i for i in graph.initializer if not i.name.startswith(prefix)]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    remaining = [o for o in graph.output if o.name not in outputs]
    del graph.output[:]
    graph.output.extend(remaining)
    return proto


def strip(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy without anything this module added: raw probabilities, no features, no score."""
    proto = without(proto, PREFIX, (SCORE, FEATURES))
    for node in proto.graph.node:
        if node.op_type == "Softmax" and node.output[0] in ("probabilities", f"{PREFIX}sharpened"):
            node.input[0], node.output[0] = "logits", "probabilities"
    return proto


def with_features(proto: onnx.ModelProto, sources: list[str]) -> onnx.ModelProto:
    """The stripped graph with FEATURES as an extra output, to compute the head's training data."""
    proto = strip(proto)
    proto.graph.node.extend(feature_nodes(proto, sources))
    proto.graph.output.append(helper.make_tensor_value_info(FEATURES, TensorProto.FLOAT, ["batch", None]))
    return proto


def trusted(proto: onnx.ModelProto, sources: list[str], fit: Fit, head: Head) -> onnx.ModelProto:
    """The stripped graph with calibrated probabilities and the `digit_score` output (N, 1)."""
    proto = strip(proto)
    graph = proto.graph
    graph.initializer.extend(calibration_initializers(fit))
    graph.node.append(node("Mul", ["logits", f"{PREFIX}inverse_temperature"], f"{PREFIX}scaled"))
    softmax_node = next(n for n in graph.node if "probabilities" in n.output)
    softmax_node.input[0] = f"{PREFIX}scaled"
    if fit.floor:
        softmax_node.output[0] = f"{PREFIX}sharpened"
        graph.node.extend([
            node("Mul", [f"{PREFIX}sharpened", f"{PREFIX}kept"], f"{PREFIX}floored"),
            node("Add", [f"{PREFIX}floored", f"{PREFIX}floor"], "probabilities"),
        ])  # fmt: skip
    nodes, initializers = head_nodes(head)
    graph.node.extend([*feature_nodes(proto, sources), *nodes])
    graph.initializer.extend(initializers)
    graph.output.append(helper.make_tensor_value_info(SCORE, TensorProto.FLOAT, ["batch", 1]))
    proto = _topologically_sorted(proto)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def node(op: str, inputs: list[str], output: str) -> onnx.NodeProto:
    """A node named after its output with this module's prefix, so that strip() finds it."""
    return helper.make_node(op, inputs, [output], name=f"{PREFIX}{output.removeprefix(PREFIX)}")


def calibration_initializers(fit: Fit) -> list[onnx.TensorProto]:
    values = {"inverse_temperature": 1.0 / fit.temperature, "kept": 1.0 - fit.floor, "floor": fit.floor / 10}
    return [numpy_helper.from_array(np.array(v, dtype=np.float32), f"{PREFIX}{k}") for k, v in values.items()]


def _topologically_sorted(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The Mul that now feeds the Softmax was appended after it: ONNX wants producers before consumers."""
    graph = proto.graph
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        node = next(n for n in pending if all(i in ready for i in n.input))
        pending.remove(node)
        ordered.append(node)
        ready.update(node.output)
    del graph.node[:]
    graph.node.extend(ordered)
    return proto


def run(proto: onnx.ModelProto, images: npt.NDArray[np.uint8], outputs: list[str], batch: int = 500) -> list[Floats]:
    """The named outputs for (N, 28, 28) uint8 images, in batches."""
    path = Path("/dev/shm" if Path("/dev/shm").is_dir() else "/tmp") / f"{PREFIX}{id(proto)}.onnx"
    onnx.save(proto, str(path))
    try:
        session = session_for(path)
    finally:
        path.unlink()
    x = (images.astype(np.float32) / 255.0)[..., np.newaxis]
    parts = [session.run(outputs, {INPUT_NAME: x[i : i + batch]}) for i in range(0, len(x), batch)]
    return [np.concatenate([p[k] for p in parts]) for k in range(len(outputs))]


# --- data for the head ------------------------------------------------------------------------------------------


def as_uploads(digits: npt.NDArray[np.uint8], seed: int) -> npt.NDArray[np.uint8]:
    """MNIST digits drawn again as users upload them (enlarged, turned a little, thicker or thinner, either
    polarity) and prepared by the service's own chain: the detector must accept what the service makes of a digit."""
    rng, prepared = np.random.default_rng(seed), []
    for digit in digits:
        image = Image.fromarray(digit).resize((112, 112), Image.Resampling.BILINEAR)
        image = image.rotate(float(rng.uniform(-12, 12)), resample=Image.Resampling.BILINEAR)
        stroke = rng.choice([None, ImageFilter.MaxFilter(5), ImageFilter.MinFilter(3)])
        image = image.filter(stroke) if stroke else image
        image = Image.fromarray(255 - np.asarray(image)) if rng.random() < 0.5 else image
        try:
            prepared.append(mnist_digit(image))
        except ServiceError:
            continue
    return np.stack(prepared)


def rates(digit_scores: Floats, other_scores: Floats, families: np.ndarray, names: list[str], threshold: float
          ) -> DetectorRates:  # fmt: skip
    caught = other_scores < threshold
    return DetectorRates(
        digits=len(digit_scores),
        digits_flagged=round(float((digit_scores < threshold).mean()), 5),
        non_digits=len(other_scores),
        non_digits_caught=round(float(caught.mean()), 5),
        caught_per_family={n: round(float(caught[families == i].mean()), 4) for i, n in enumerate(names)},
    )


@dataclasses.dataclass
class Result:
    card: ModelCard
    proto: onnx.ModelProto
    head: Head
    test_probabilities: npt.NDArray[np.float64]
    uncalibrated: npt.NDArray[np.float64]
    worst_digits: npt.NDArray[np.uint8]  # test digits with the lowest digit_score
    worst_others: npt.NDArray[np.uint8]  # evaluation non-digits with the highest digit_score
    worst_scores: tuple[Floats, Floats]


def feature_sources(card: ModelCard) -> list[str]:
    """A CNN's activation maps; a linear model's logits and its centred input pixels (its logits alone cannot
    tell a letter from a digit: the head on them caught a fifth of the non-digits on the sample)."""
    return [a.name for a in card.activations] if card.kind == "cnn" else ["logits", "centred"]


@dataclasses.dataclass
class DetectorData:
    """What the head is trained, thresholded and judged on: (N, 28, 28) images, and each non-digit's family."""

    digits: npt.NDArray[np.uint8]
    uploads: int  # how many of the digits are redrawn as uploads
    others: npt.NDArray[np.uint8]
    val_others: npt.NDArray[np.uint8]
    val_families: npt.NDArray[np.int64]
    eval_others: npt.NDArray[np.uint8]
    eval_families: npt.NDArray[np.int64]


def detector_data(data: Mnist, seed: int) -> DetectorData:
    budget = min(len(data.train), 20_000)  # the head converges well before; more costs minutes on 2 cores
    uploads = as_uploads(data.train.images[: budget // 2], seed)
    digits = np.concatenate([data.train.images[:budget], uploads])
    val_others, val_families = nondigits.training_set(max(len(data.validation), 500), seed=nondigits.TRAINING_SEED + 1)
    eval_others, eval_families = nondigits.evaluation_set()
    return DetectorData(
        digits=digits,
        uploads=len(uploads),
        others=nondigits.training_set(len(digits))[0],
        val_others=val_others,
        val_families=val_families,
        eval_others=eval_others,
        eval_families=eval_families,
    )


def detector_record(sources: list[str], sets: DetectorData, threshold: float, validation: DetectorRates,
                    test: DetectorRates) -> Detector:  # fmt: skip
    return Detector(
        threshold=round(threshold, 6),
        features=" + ".join(f"mean and max of {s}" if s.startswith("conv") else s for s in sources),
        head=f"standardised features -> dense {HIDDEN}, ReLU -> dense 1 -> sigmoid; trained in NumPy",
        training={
            "digits": len(sets.digits),
            "digits_redrawn_as_uploads": sets.uploads,
            "non_digits": len(sets.others),
            "families": list(nondigits.TRAINING_DRAWERS),
            "generator_seed": nondigits.TRAINING_SEED,
            "evaluation_seed": nondigits.EVALUATION_SEED,
            "threshold_rule": f"{DIGITS_FLAGGED_ON_VALIDATION:.1%} of validation digits below it",
        },
        validation=validation,
        test=test,
    )


def make_trusted(
    card: ModelCard, proto: onnx.ModelProto, data: Mnist, seed: int = 0, log: Callable[[str], None] = print
) -> Result:
    """Calibrate, train the detector, rewrite the graph and the card's new sections (figures are the caller's)."""
    sources = feature_sources(card)
    probe, sets = with_features(proto, sources), detector_data(data, seed)
    log(f"{card.name}: features of {len(sets.digits):,} digits and {len(sets.others):,} generated non-digits")
    head = train_head(run(probe, sets.digits, [FEATURES])[0], run(probe, sets.others, [FEATURES])[0], seed)
    val_logits, f_val = run(probe, data.validation.images, ["logits", FEATURES])
    fit = fit_calibration(val_logits, data.validation.labels)
    val_scores, val_other_scores = head.score(f_val)[:, 0], head.score(run(probe, sets.val_others, [FEATURES])[0])[:, 0]
    threshold = float(np.quantile(val_scores, DIGITS_FLAGGED_ON_VALIDATION))

    new = trusted(proto, sources, fit, head)
    test_logits, test_probabilities, test_scores = run(new, data.test.images, ["logits", "probabilities", SCORE])
    eval_scores = run(new, sets.eval_others, [SCORE])[0][:, 0]
    parity = {
        **card.parity.max_abs_diff,
        "probabilities": float(np.abs(test_probabilities - calibrated(test_logits, fit.temperature, fit.floor)).max()),
        SCORE: float(np.abs(test_scores - head.score(run(probe, data.test.images, [FEATURES])[0])).max()),
    }
    val_rates = rates(val_scores, val_other_scores, sets.val_families, list(nondigits.TRAINING_DRAWERS), threshold)
    test_rates = rates(
        test_scores[:, 0], eval_scores, sets.eval_families, list(nondigits.EVALUATION_DRAWERS), threshold
    )
    card = card.model_copy(
        update={
            "outputs": [o for o in card.outputs if o.name != SCORE] + [TensorSpec(name=SCORE, shape=[-1, 1])],
            "calibration": calibration_record(fit, test_logits, data.test.labels, len(data.validation)),
            "detector": detector_record(sources, sets, threshold, val_rates, test_rates),
            "parity": card.parity.model_copy(update={"max_abs_diff": parity}),
        }
    )
    worst_digits, worst_others = np.argsort(test_scores[:, 0])[:20], np.argsort(-eval_scores)[:20]
    return Result(
        card=card,
        proto=new,
        head=head,
        test_probabilities=test_probabilities.astype(np.float64),
        uncalibrated=softmax(test_logits),
        worst_digits=data.test.images[worst_digits],
        worst_others=sets.eval_others[worst_others],
        worst_scores=(test_scores[worst_digits, 0], eval_scores[worst_others]),
    )


def measure(folder: Path, data: Mnist) -> tuple[float, float, float]:
    """Test ECE, share of test digits flagged and share of evaluation non-digits caught, from the model's file and
    card alone (the evaluation set is generated again from its own seed)."""
    from app.cards import read_card

    card = read_card(folder)
    proto = onnx.load(str(folder / card.file))
    (probabilities,) = run(proto, data.test.images, ["probabilities"])
    ece = calibration_metrics(probabilities.astype(np.float64), data.test.labels).ece
    if card.detector is None:
        return ece, float("nan"), float("nan")
    test = detector_test_rates(proto, card.detector.threshold, data)
    return ece, test.digits_flagged, test.non_digits_caught


def detector_test_rates(proto: onnx.ModelProto, threshold: float, data: Mnist) -> DetectorRates:
    """The detector's rates on the MNIST test digits and on the evaluation non-digits, generated again."""
    others, families = nondigits.evaluation_set()
    (digit_scores,) = run(proto, data.test.images, [SCORE])
    (other_scores,) = run(proto, others, [SCORE])
    return rates(digit_scores[:, 0], other_scores[:, 0], families, list(nondigits.EVALUATION_DRAWERS), threshold)


def remeasured(card: ModelCard, proto: onnx.ModelProto, data: Mnist) -> ModelCard:
    """The card with its detector's test rates measured again on the model as it is (the detector unchanged): the
    figures `make evaluate` prints, when the evaluation generator or the preprocessing moved since training."""
    if card.detector is None:
        return card
    test = detector_test_rates(proto, card.detector.threshold, data)
    return card.model_copy(update={"detector": card.detector.model_copy(update={"test": test})})
