"""app.explain on the committed models: completeness, shapes, and the linear models' exact decomposition."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from app.cards import ModelCard, read_card
from app.errors import BadSetting, BadTarget, UnknownMethod
from app.explain import (
    Options,
    explain,
    explain_images,
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
