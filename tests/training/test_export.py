from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training import export
from training.data import Mnist
from training.linear import LinearModel


def linear_model(seed: int = 0) -> LinearModel:
    rng = np.random.default_rng(seed)
    return LinearModel(
        weights=rng.standard_normal((784, 10)).astype(np.float32),
        bias=rng.standard_normal(10).astype(np.float32),
        mean=rng.random(784).astype(np.float32),
        pixel_scale=1.0,
    )


def test_linear_export_matches_numpy(tmp_path: Path, mnist_sample: Mnist) -> None:
    model = linear_model()
    path = tmp_path / "linear.onnx"
    export.save(export.linear_to_onnx(model, "linear"), path)
    images = (mnist_sample.test.images[:50].astype(np.float32) / 255)[..., None]
    parity = export.check_parity(path, lambda x: export.linear_reference(model, x), images)
    assert set(parity.max_abs_diff) == {"logits", "probabilities", "evidence"}
    outputs = export.onnx_outputs(path, images)
    assert outputs["evidence"].shape == (50, 10, 28, 28)
    # The evidence maps add up to the logits, less the bias.
    np.testing.assert_allclose(
        outputs["evidence"].sum(axis=(2, 3)) + model.bias, outputs["logits"], rtol=1e-4, atol=1e-3
    )


def test_parity_check_fails_on_a_different_model(tmp_path: Path, mnist_sample: Mnist) -> None:
    path = tmp_path / "linear.onnx"
    export.save(export.linear_to_onnx(linear_model(0), "linear"), path)
    images = (mnist_sample.test.images[:5].astype(np.float32) / 255)[..., None]
    with pytest.raises(ValueError, match="differs by"):
        export.check_parity(path, lambda x: export.linear_reference(linear_model(1), x), images)


@pytest.mark.slow
def test_tiny_cnn_exports_with_activation_outputs(tmp_path: Path, mnist_sample: Mnist) -> None:
    import keras

    model = keras.Sequential(
        [
            keras.Input((28, 28, 1), name="image"),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv2"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10, name="logits"),
        ]
    )
    proto, reference = export.keras_to_onnx(model, ["conv1", "conv2"])
    path = tmp_path / "tiny.onnx"
    export.save(proto, path)
    images = (mnist_sample.test.images[:20].astype(np.float32) / 255)[..., None]
    parity = export.check_parity(path, reference, images)
    assert max(parity.max_abs_diff.values()) <= 1e-4
    outputs = export.onnx_outputs(path, images)
    assert list(outputs) == ["logits", "probabilities", "conv1", "conv2"]
    assert outputs["conv1"].shape == (20, 4, 28, 28)  # channel-major
    assert outputs["conv2"].shape == (20, 6, 14, 14)
    np.testing.assert_allclose(outputs["probabilities"].sum(axis=1), 1.0, rtol=1e-5)
