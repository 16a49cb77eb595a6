"""Write explain.onnx beside a committed model, check it against finite differences, and record it in the card."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort

from app.cards import (
    INPUT_GRADIENT,
    INPUT_NAME,
    TARGET,
    TARGET_LOGIT,
    Explain,
    GradientCheck,
    ModelCard,
    read_card,
)
from app.explain import integrated_gradients
from training import export, report
from training.gradient_graph import explain_model

EXPLAIN_FILE = "explain.onnx"
CNN_METHODS = ["integrated_gradients", "occlusion", "gradcam"]
LINEAR_METHODS = ["exact", "integrated_gradients", "occlusion"]
EPSILON = 1e-3  # float32 logits: smaller steps drown in rounding, larger ones cross ReLU kinks
NOISE = 0.2  # uniform noise mixed into the checked digits: the black background otherwise ties every max-pool
CHECK_STEPS = 32
OFF = 0.05  # a pixel is "off" when |finite difference - gradient| exceeds 5% of the largest gradient


def session(data: bytes | str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def target_logits(model: ort.InferenceSession, images: npt.NDArray[np.float32], target: int) -> npt.NDArray[np.float64]:
    """(N,) the target's logit for each (N, 28, 28, 1) image."""
    logits: npt.NDArray[np.float32] = model.run(["logits"], {INPUT_NAME: images})[0]
    return logits[:, target].astype(np.float64)


def finite_differences(
    model: ort.InferenceSession, image: npt.NDArray[np.float32], target: int
) -> npt.NDArray[np.float64]:
    """(784,) central differences of the target logit, one pixel at a time, all in one batch."""
    pixels = image.size  # image: (1, 28, 28, 1)
    steps = np.eye(pixels, dtype=np.float32).reshape(pixels, *image.shape[1:]) * EPSILON  # (784, 28, 28, 1)
    up = target_logits(model, image + steps, target)
    down = target_logits(model, image - steps, target)
    return (up - down) / (2 * EPSILON)


def gradient(
    explainer: ort.InferenceSession, images: npt.NDArray[np.float32], targets: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """(target logits (N,), input gradients (N, 28, 28, 1))."""
    logit, grad = explainer.run([TARGET_LOGIT, INPUT_GRADIENT], {INPUT_NAME: images, TARGET: targets})
    return logit, grad


def completeness_error(explainer: ort.InferenceSession, image: npt.NDArray[np.float32], target: int) -> float:
    """The service's integrated gradients from black: |sum(attribution) - (f(x) - f(0))| / |f(x) - f(0)|."""
    return integrated_gradients(explainer, image, target, CHECK_STEPS)[1]


def check_gradients(
    model: ort.InferenceSession, explainer: ort.InferenceSession, digits: npt.NDArray[np.uint8], seed: int = 17
) -> GradientCheck:
    """explain.onnx's gradient against finite differences of model.onnx, and its integrated gradients' completeness."""
    rng = np.random.default_rng(seed)
    images = (digits.astype(np.float32) / 255.0)[..., np.newaxis]
    noisy = ((1 - NOISE) * images + NOISE * rng.random(images.shape)).astype(np.float32)
    correlations, off, errors = [], [], []
    for plain, image in zip(images, noisy, strict=True):
        target = int(np.argmax(model.run(["logits"], {INPUT_NAME: image[np.newaxis]})[0][0]))
        _, grads = gradient(explainer, image[np.newaxis], np.array([target]))
        analytic, numeric = grads.reshape(-1).astype(np.float64), finite_differences(model, image[np.newaxis], target)
        correlations.append(float(np.corrcoef(analytic, numeric)[0, 1]))
        off.append(float(np.mean(np.abs(analytic - numeric) > OFF * np.abs(analytic).max())))
        errors.append(completeness_error(explainer, plain[..., 0], target))
    return GradientCheck(
        images=len(images),
        epsilon=EPSILON,
        min_correlation=round(min(correlations), 5),
        pixels_off=round(max(off), 5),
        steps=CHECK_STEPS,
        max_completeness_error=round(max(errors), 5),
    )


def export_explain(folder: Path, digits: npt.NDArray[np.uint8]) -> ModelCard:
    """folder/explain.onnx written from folder's model.onnx, checked on the (N, 28, 28) digits, and its card
    updated (faithfulness figures already there are kept)."""
    card = read_card(folder)
    graph, layer = explain_model(onnx.load(folder / card.file))
    data = graph.SerializeToString()
    check = check_gradients(session(str(folder / card.file)), session(data), digits)
    previous = card.explain
    explain = Explain(
        **export.write_companion(folder, EXPLAIN_FILE, data).model_dump(),
        methods=previous.methods if previous else (CNN_METHODS if card.kind == "cnn" else LINEAR_METHODS),
        gradcam_layer=layer,
        gradient_check=check,
        faithfulness=previous.faithfulness if previous else {},
        faithfulness_setup=previous.faithfulness_setup if previous else None,
    )
    updated = card.model_copy(update={"explain": explain})
    report.write_card(folder, updated)
    return updated
