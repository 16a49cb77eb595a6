"""Attribution maps: which pixels of the 28x28 input pushed a model towards a class. Transport-free: arrays in,
an Explanation out; ServiceError subclasses for bad requests. Every method makes one batched ONNX Runtime call.

Each map explains the target's *logit* (the raw score before the softmax), in logit units: positive pixels pushed
towards the target, negative ones against it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from app.cards import GRADCAM_GRADIENT, GRADCAM_MAPS, INPUT_GRADIENT, INPUT_NAME, TARGET, TARGET_LOGIT, ModelCard
from app.errors import BadSetting, BadTarget, ModelUnavailable, UnknownMethod

Method = Literal["integrated_gradients", "occlusion", "gradcam", "exact"]
METHODS: tuple[Method, ...] = ("integrated_gradients", "occlusion", "gradcam", "exact")
GRADIENT_METHODS = frozenset({"integrated_gradients", "gradcam"})  # these need explain.onnx
CLASSES = 10
FIELD = 28
MAX_STEPS = 256  # one batch of MAX_STEPS + 2 images: ~0.3 s for cnn on one core
STEPS, PATCH, STRIDE = 32, 4, 2
Map = npt.NDArray[np.float32]  # (28, 28)
# The model itself: (N, 28, 28, 1) images and output names -> those outputs. The service calls the model where it
# runs (its threads or its model process); scripts and tests call a session of model.onnx (session_forward).
Forward = Callable[[npt.NDArray[np.float32], Sequence[str]], dict[str, npt.NDArray[np.float32]]]


def session_forward(session: ort.InferenceSession) -> Forward:
    def forward(images: npt.NDArray[np.float32], outputs: Sequence[str]) -> dict[str, npt.NDArray[np.float32]]:
        return dict(zip(outputs, session.run(list(outputs), {INPUT_NAME: images}), strict=True))

    return forward


@dataclass(frozen=True)
class Options:
    """Method settings: integrated gradients' steps; occlusion's square patch and its stride, in pixels."""

    steps: int = STEPS
    patch: int = PATCH
    stride: int = STRIDE

    def check(self) -> Options:
        for name, value, top in (
            ("steps", self.steps, MAX_STEPS),
            ("patch", self.patch, 14),
            ("stride", self.stride, 14),
        ):
            if not 1 <= value <= top:
                raise BadSetting(f"{name} is {value}; it must lie between 1 and {top}.")
        return self


@dataclass(frozen=True)
class Explanation:
    attribution: Map
    method: Method
    target: int
    baseline: str
    settings: dict[str, int] = field(default_factory=dict)
    completeness_error: float | None = None  # integrated gradients: |sum - (f(x) - f(baseline))| / |f(x) - f(baseline)|


def offered_methods(card: ModelCard, explainer: ort.InferenceSession | None) -> list[Method]:
    """The methods this model offers, its default first: the card's list (the faithfulness checks removed the
    failures), less the gradient methods when explain.onnx is not loaded."""
    if card.explain is not None:
        listed = [m for m in METHODS if m in card.explain.methods]
        listed.sort(key=card.explain.methods.index)
    else:
        listed = ["exact", "occlusion"] if card.kind == "linear" else ["occlusion"]
    return [m for m in listed if explainer is not None or m not in GRADIENT_METHODS]


def resolve_method(offered: list[Method], method: str | None, model: str) -> Method:
    """The requested method (the model's default when None); UnknownMethod if it is not offered."""
    if method is None:
        return offered[0]
    for known in offered:
        if known == method:
            return known
    raise UnknownMethod(f"Method {method[:40]!r} is not offered for model {model!r}; offered: {', '.join(offered)}.")


def check_target(target: int) -> int:
    if not 0 <= target < CLASSES:
        raise BadTarget(f"target is {target}; it must be a digit 0-9.")
    return target


@functools.cache
def path_quadrature(steps: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Gauss-Legendre nodes on [0, 1] and their weights (Captum's default rule). On cnn at 32 steps, over the first
    200 test digits, the median completeness error was 1.3% against the midpoint rule's 1.9% (41% vs 29% of digits
    within 1%), at the same cost: one batch of `steps` images either way."""
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return ((nodes + 1) / 2).astype(np.float32), (weights / 2).astype(np.float32)


def integrated_gradients(explainer: ort.InferenceSession, image: Map, target: int, steps: int) -> tuple[Map, float]:
    """Integrated gradients from a black image, Gauss-Legendre rule; (map, completeness error)."""
    alphas, weights = path_quadrature(steps)
    x = image[np.newaxis, :, :, np.newaxis]  # (1, 28, 28, 1)
    batch = np.concatenate([alphas[:, None, None, None] * x, x, np.zeros_like(x)])  # (steps + 2, 28, 28, 1)
    targets = np.full(len(batch), target, dtype=np.int64)
    logits, grads = explainer.run([TARGET_LOGIT, INPUT_GRADIENT], {INPUT_NAME: batch, TARGET: targets})
    attribution = image * np.tensordot(weights, grads[:steps, :, :, 0], axes=1)
    change = float(logits[-2] - logits[-1])
    return attribution.astype(np.float32), abs(float(attribution.sum()) - change) / max(abs(change), 1e-6)


def patch_starts(patch: int, stride: int) -> list[int]:
    """Where patches start along one side, the last flush with the edge so that every pixel is covered."""
    starts = list(range(0, FIELD - patch + 1, stride))
    return starts if starts[-1] == FIELD - patch else [*starts, FIELD - patch]


def occlusion_masks(patch: int, stride: int) -> npt.NDArray[np.bool_]:
    """(K, 28, 28): True inside each patch."""
    starts = patch_starts(patch, stride)
    masks = np.zeros((len(starts) ** 2, FIELD, FIELD), dtype=bool)
    for index, (row, column) in enumerate((r, c) for r in starts for c in starts):
        masks[index, row : row + patch, column : column + patch] = True
    return masks


def occlusion(forward: Forward, image: Map, target: int, patch: int, stride: int) -> Map:
    """Each pixel: the mean drop of the target's logit when a black patch covers it, over the patches that do."""
    masks = occlusion_masks(patch, stride)
    copies = np.concatenate([image[np.newaxis], np.where(masks, 0.0, image)])[..., np.newaxis].astype(np.float32)
    logits = forward(copies, ["logits"])["logits"][:, target]  # (K + 1,)
    drops = logits[0] - logits[1:]
    covered = masks.sum(axis=0)
    return (np.tensordot(drops, masks, axes=1) / np.maximum(covered, 1)).astype(np.float32)


def upsampled(maps: npt.NDArray[np.float32], size: int = FIELD) -> Map:
    """(h, w) -> (size, size), bilinear, pixel centres aligned (as image resizing does)."""

    def axis(n: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.float32]]:
        position = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1).astype(np.float32)
        low = np.floor(position).astype(np.intp)
        return low, np.minimum(low + 1, n - 1), position - low

    r0, r1, rw = axis(maps.shape[0])
    c0, c1, cw = axis(maps.shape[1])
    rows = maps[r0] * (1 - rw)[:, None] + maps[r1] * rw[:, None]
    return (rows[:, c0] * (1 - cw) + rows[:, c1] * cw).astype(np.float32)


def gradcam(explainer: ort.InferenceSession, image: Map, target: int) -> Map:
    """Grad-CAM on the ink: the last convolution's ReLU maps weighted by their spatially averaged gradients, ReLU,
    bilinear to 28x28, times the input. The grid alone (5x5 on cnn) blown up to 28x28 marks a region, and its
    highest pixels often lie on the black paper around the strokes, where nothing can be taken away: on 1,000 test
    digits its top 16 pixels cut the target's probability 2.0x (cnn) and 1.1x (lenet) as much as 16 random ink
    pixels; weighted by the ink, 4.0x and 8.9x (benchmarks.explain_eval), and the maps of a randomised model still
    do not resemble them (rank correlation 0.10 and 0.05)."""
    feed = {INPUT_NAME: image[np.newaxis, :, :, np.newaxis], TARGET: np.array([target], dtype=np.int64)}
    maps, grads = explainer.run([GRADCAM_MAPS, GRADCAM_GRADIENT], feed)  # (1, C, h, w) each
    weights = grads[0].mean(axis=(1, 2))
    return (upsampled(np.maximum(np.tensordot(weights, maps[0], axes=1), 0.0)) * image).astype(np.float32)


def exact(forward: Forward, image: Map, target: int) -> Map:
    """A linear model's exact decomposition: the target's weights times the centred input (`evidence`)."""
    evidence = forward(image[np.newaxis, :, :, np.newaxis], ["evidence"])["evidence"]
    return evidence[0, target].astype(np.float32)


BASELINES: dict[Method, str] = {
    "integrated_gradients": "black",
    "occlusion": "black patches",
    "gradcam": "none",
    "exact": "the mean training digit",
}


def explain(
    *,
    card: ModelCard,
    forward: Forward | None,
    explainer: ort.InferenceSession | None,
    image: Map,
    method: Method,
    target: int,
    options: Options,
) -> Explanation:
    """The attribution of `target` on the (28, 28) float32 image in [0, 1]; method from resolve_method."""
    if forward is None:
        raise ModelUnavailable(f"Model {card.name!r} is unavailable.")
    error: float | None = None
    settings: dict[str, int] = {}
    if method == "integrated_gradients" and explainer is not None:
        attribution, error = integrated_gradients(explainer, image, target, options.steps)
        settings = {"steps": options.steps}
    elif method == "gradcam" and explainer is not None:
        attribution = gradcam(explainer, image, target)
    elif method == "occlusion":
        attribution = occlusion(forward, image, target, options.patch, options.stride)
        settings = {"patch": options.patch, "stride": options.stride}
    elif method == "exact":
        attribution = exact(forward, image, target)
    else:
        raise UnknownMethod(f"Method {method!r} is not available for model {card.name!r}.")
    return Explanation(attribution, method, target, BASELINES[method], settings, error)


def predicted_digits(forward: Forward, images: npt.NDArray[np.float32]) -> list[int]:
    """The most probable digit of each (N, 28, 28) image."""
    logits = forward(images[..., np.newaxis], ["logits"])["logits"]
    return [int(k) for k in np.argmax(logits, axis=1)]


def explain_images(
    *,
    card: ModelCard,
    forward: Forward | None,
    explainer: ort.InferenceSession | None,
    images: npt.NDArray[np.float32],
    method: Method,
    targets: list[int] | None,
    options: Options,
) -> list[Explanation]:
    """One explanation per (N, 28, 28) image in [0, 1]; targets default to the predicted digits."""
    if forward is None:
        raise ModelUnavailable(f"Model {card.name!r} is unavailable.")
    if targets is not None and len(targets) != len(images):
        raise BadTarget(f"{len(targets)} targets for {len(images)} images; give one per image, or none.")
    chosen = [check_target(t) for t in targets] if targets is not None else predicted_digits(forward, images)
    return [
        explain(card=card, forward=forward, explainer=explainer, image=image, method=method, target=t, options=options)
        for image, t in zip(images, chosen, strict=True)
    ]
