"""app.explain on the committed models (completeness, shapes, the linear models' exact decomposition), and each
method's arithmetic against models whose answers are known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from app.cards import (
    GRADCAM_GRADIENT,
    GRADCAM_MAPS,
    INPUT_GRADIENT,
    INPUT_NAME,
    TARGET,
    TARGET_LOGIT,
    ModelCard,
    read_card,
)
from app.errors import BadSetting, BadTarget, ModelUnavailable, UnknownMethod
from app.explain import (
    MAX_STEPS,
    Options,
    explain,
    explain_images,
    gradcam,
    integrated_gradients,
    occlusion,
    occlusion_masks,
    offered_methods,
    patch_starts,
    path_quadrature,
    resolve_method,
    session_forward,
    upsampled,
)
from tests.helpers import MODELS_DIR
from training.data import Mnist

Loaded = tuple[ModelCard, ort.InferenceSession, ort.InferenceSession]


def loaded(name: str) -> Loaded:
    folder: Path = MODELS_DIR / name
    card = read_card(folder)
    assert card.explain is not None
    model = ort.InferenceSession(str(folder / card.file))
    return card, model, ort.InferenceSession(str(folder / card.explain.file))


@pytest.fixture(scope="module")
def cnn() -> Loaded:
    return loaded("cnn")


def image_of(mnist_sample: Mnist, index: int) -> np.ndarray:
    return (mnist_sample.test.images[index] / 255.0).astype(np.float32)


def run(model: Loaded, image: np.ndarray, method: str, target: int, **options: int):  # type: ignore[no-untyped-def]
    card, session, explainer = model
    return explain(
        card=card,
        forward=session_forward(session),
        explainer=explainer,
        image=image,
        method=method,
        target=target,
        options=Options(**options),
    )


def test_integrated_gradients_on_cnn_are_complete_within_1_percent(cnn: Loaded, mnist_sample: Mnist) -> None:
    image = image_of(mnist_sample, 0)
    result = run(cnn, image, "integrated_gradients", 7, steps=256)
    logits = cnn[1].run(["logits"], {"image": np.stack([image, 0 * image])[..., None]})[0][:, 7]
    assert result.attribution.sum() == pytest.approx(logits[0] - logits[1], rel=0.01)
    assert result.completeness_error < 0.01
    assert result.attribution[image == 0].tolist() == [0.0] * int((image == 0).sum())  # input times gradient


def test_occlusion_covers_every_pixel_in_one_batch(cnn: Loaded, mnist_sample: Mnist) -> None:
    assert patch_starts(4, 3) == [0, 3, 6, 9, 12, 15, 18, 21, 24]
    assert patch_starts(5, 4)[-1] == 23  # the last patch flush with the edge
    masks = occlusion_masks(5, 4)
    assert masks.shape == (len(patch_starts(5, 4)) ** 2, 28, 28)
    assert masks.any(axis=0).all()
    result = run(cnn, image_of(mnist_sample, 0), "occlusion", 7, patch=5, stride=4)
    assert result.attribution.shape == (28, 28)
    assert result.settings == {"patch": 5, "stride": 4}


def test_gradcam_is_a_non_negative_28x28_map_on_the_ink(cnn: Loaded, mnist_sample: Mnist) -> None:
    image = image_of(mnist_sample, 0)
    result = run(cnn, image, "gradcam", 7)
    assert result.attribution.shape == (28, 28)
    assert result.attribution.min() >= 0
    assert result.attribution[image > 0].max() > 0
    assert not result.attribution[image == 0].any()  # weighted by the ink: nothing on the black paper
    np.testing.assert_allclose(upsampled(np.ones((5, 5), np.float32)), np.ones((28, 28)))


@pytest.mark.parametrize("name", ["softmax", "svm"])
def test_linear_exact_is_the_evidence(name: str, mnist_sample: Mnist) -> None:
    model = loaded(name)
    image = image_of(mnist_sample, 1)
    result = run(model, image, "exact", 3)
    evidence = model[1].run(["evidence"], {"image": image[None, :, :, None]})[0]
    np.testing.assert_array_equal(result.attribution, evidence[0, 3])
    assert result.attribution.dtype == np.float32
    assert result.baseline == "the mean training digit"
    ig = run(model, image, "integrated_gradients", 3)
    assert ig.completeness_error < 1e-4  # linear: any quadrature rule is exact


def test_methods_offered_and_refused(cnn: Loaded) -> None:
    card, _, explainer = cnn
    offered = offered_methods(card, explainer)
    assert offered[0] == "integrated_gradients"
    assert offered_methods(card, None) == [m for m in offered if m == "occlusion"]  # without explain.onnx
    with pytest.raises(UnknownMethod, match="offered: integrated_gradients"):
        resolve_method(offered, "exact", "cnn")
    with pytest.raises(BadSetting, match="steps is 0"):
        Options(steps=0).check()


def test_explain_images_defaults_to_the_predicted_digits(cnn: Loaded, mnist_sample: Mnist) -> None:
    card, session, explainer = cnn
    images = (mnist_sample.test.images[:3] / 255.0).astype(np.float32)
    results = explain_images(
        card=card,
        forward=session_forward(session),
        explainer=explainer,
        images=images,
        method="gradcam",
        targets=None,
        options=Options(),
    )
    assert [r.target for r in results] == mnist_sample.test.labels[:3].tolist()
    with pytest.raises(BadTarget):
        explain_images(
            card=card,
            forward=session_forward(session),
            explainer=explainer,
            images=images,
            method="gradcam",
            targets=[1, 2],
            options=Options(),
        )


def test_path_quadrature_integrates_polynomials_on_the_unit_interval() -> None:
    alphas, weights = path_quadrature(8)
    assert ((alphas > 0) & (alphas < 1)).all()
    assert float(weights.sum()) == pytest.approx(1.0)
    assert float(weights @ alphas**5) == pytest.approx(1 / 6, rel=1e-5)  # 8 nodes: exact up to degree 15


# The methods' arithmetic, against models whose answers are known: a linear score, and a scripted explain.onnx.

WEIGHTS = np.random.default_rng(0).normal(size=(28, 28)).astype(np.float32)


def linear_forward(images: np.ndarray, outputs: list[str]) -> dict[str, np.ndarray]:
    """A model whose every logit is the sum of its pixels times WEIGHTS."""
    score = np.einsum("nhwc,hw->n", images, WEIGHTS)
    return {"logits": np.repeat(score[:, None], 10, axis=1)}


class ScriptedExplainer:
    """explain.onnx's outputs, given: the target logit of the image and of black, a gradient, Grad-CAM's maps."""

    def __init__(self, logit: float = 0.0, gradient: float = 0.0, maps: np.ndarray | None = None,
                 map_gradients: np.ndarray | None = None) -> None:  # fmt: skip
        self.logit, self.gradient, self.maps, self.map_gradients = logit, gradient, maps, map_gradients

    def run(self, outputs: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        assert feed[TARGET].dtype == np.int64
        images = feed[INPUT_NAME]
        values = {
            TARGET_LOGIT: np.where(images.reshape(len(images), -1).any(axis=1), self.logit, 0.0).astype(np.float32),
            INPUT_GRADIENT: np.full(images.shape, self.gradient, np.float32),
            GRADCAM_MAPS: self.maps,
            GRADCAM_GRADIENT: self.map_gradients,
        }
        return [values[name] for name in outputs]


def test_occlusion_is_the_mean_drop_of_the_patches_over_each_pixel() -> None:
    image = np.random.default_rng(2).random((28, 28)).astype(np.float32)  # ink under every patch, corners too
    contribution = image * WEIGHTS
    # Patches that tile the field: each pixel's share is its own patch's drop, the patch's summed contribution.
    tiled = occlusion(linear_forward, image, 3, patch=4, stride=4)
    own_patch = contribution.reshape(7, 4, 7, 4).sum(axis=(1, 3))
    np.testing.assert_allclose(tiled, np.kron(own_patch, np.ones((4, 4))), rtol=1e-4, atol=1e-5)
    assert tiled.dtype == np.float32
    # Overlapping patches: the mean over the patches that cover the pixel.
    masks = occlusion_masks(4, 2)
    drops = np.array([contribution[mask].sum() for mask in masks])
    expected = (drops[:, None, None] * masks).sum(axis=0) / masks.sum(axis=0)
    np.testing.assert_allclose(occlusion(linear_forward, image, 3, patch=4, stride=2), expected, rtol=1e-4, atol=1e-5)


def test_patches_start_at_every_stride_and_stay_inside_the_field() -> None:
    assert patch_starts(5, 1) == list(range(24))
    assert patch_starts(14, 14) == [0, 14]
    assert occlusion_masks(4, 4).dtype == np.bool_


def test_upsampling_is_bilinear_with_pixel_centres_aligned() -> None:
    for shape in ((5, 3), (14, 14), (2, 7)):
        grid = np.random.default_rng(1).random(shape).astype(np.float32)
        resized = np.asarray(Image.fromarray(grid, mode="F").resize((28, 28), Image.Resampling.BILINEAR))
        np.testing.assert_allclose(upsampled(grid), resized, atol=1e-6)
        assert upsampled(grid).dtype == np.float32


def test_gradcam_keeps_what_pushes_towards_the_target_weighted_by_the_ink(mnist_sample: Mnist) -> None:
    image = image_of(mnist_sample, 0)
    maps = np.full((1, 2, 5, 5), 0.5, np.float32)
    towards = ScriptedExplainer(maps=maps, map_gradients=np.stack([np.full((5, 5), 0.6), np.full((5, 5), 0.2)])[None])
    attribution = gradcam(towards, image, 7)  # type: ignore[arg-type]
    np.testing.assert_allclose(attribution, 0.4 * image, rtol=1e-5)
    assert attribution.dtype == np.float32
    against = ScriptedExplainer(maps=maps, map_gradients=-towards.map_gradients)  # type: ignore[operator]
    assert not gradcam(against, image, 7).any()  # type: ignore[arg-type]


def test_integrated_gradients_report_the_gap_to_the_change_of_the_logit(mnist_sample: Mnist) -> None:
    image = image_of(mnist_sample, 0)
    # A constant gradient g integrates to g * image exactly; the logit rose by 0.5 where the map sums to g * ink.
    gradient = 0.5 / float(image.sum())
    complete, error = integrated_gradients(ScriptedExplainer(0.5, gradient), image, 7, steps=8)  # type: ignore[arg-type]
    np.testing.assert_allclose(complete, gradient * image, rtol=1e-4)
    assert complete.dtype == np.float32
    assert error == pytest.approx(0.0, abs=1e-4)
    # No gradient at all for a change of 0.5: the whole change is missing, an error of 100%.
    _, error = integrated_gradients(ScriptedExplainer(0.5, 0.0), image, 7, steps=8)  # type: ignore[arg-type]
    assert error == pytest.approx(1.0)


def test_settings_within_their_bounds_are_taken_and_the_others_named() -> None:
    Options(steps=1, patch=1, stride=1).check()
    Options(steps=MAX_STEPS, patch=14, stride=14).check()
    for options, message in (
        (Options(steps=MAX_STEPS + 1), f"steps is {MAX_STEPS + 1}; it must lie between 1 and {MAX_STEPS}"),
        (Options(patch=15), "patch is 15; it must lie between 1 and 14"),
        (Options(stride=15), "stride is 15; it must lie between 1 and 14"),
        (Options(stride=0), "stride is 0"),
    ):
        with pytest.raises(BadSetting, match=message):
            options.check()


def test_without_an_explain_section_a_model_offers_what_needs_no_gradients(cnn: Loaded) -> None:
    card, _, explainer = cnn
    bare = card.model_copy(update={"explain": None})
    assert offered_methods(bare, explainer) == ["occlusion"]
    linear = read_card(MODELS_DIR / "softmax").model_copy(update={"explain": None})
    assert offered_methods(linear, None) == ["exact", "occlusion"]


def test_refusals_name_the_method_the_model_and_the_counts(cnn: Loaded, mnist_sample: Mnist) -> None:
    card, session, _ = cnn
    with pytest.raises(
        UnknownMethod, match=r"'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' .*offered: occlusion, gradcam\.$"
    ):
        resolve_method(["occlusion", "gradcam"], "x" * 100, "cnn")
    images = (mnist_sample.test.images[:2] / 255.0).astype(np.float32)
    common = {"card": card, "images": images, "method": "gradcam", "options": Options()}
    with pytest.raises(ModelUnavailable, match="Model 'cnn' is unavailable"):
        explain_images(forward=None, explainer=None, targets=None, **common)  # type: ignore[arg-type]
    with pytest.raises(BadTarget, match="3 targets for 2 images"):
        explain_images(forward=session_forward(session), explainer=None, targets=[1, 2, 3], **common)  # type: ignore[arg-type]
    with pytest.raises(UnknownMethod, match="Method 'gradcam' is not available for model 'cnn'"):
        explain_images(forward=session_forward(session), explainer=None, targets=None, **common)  # type: ignore[arg-type]
    with pytest.raises(ModelUnavailable, match="Model 'cnn' is unavailable"):
        explain(
            card=card, forward=None, explainer=None, image=images[0], method="occlusion", target=7, options=Options()
        )
