"""training.gradients: explain.onnx's gradients against finite differences, on tiny graphs and the committed models."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from app.cards import INPUT_GRADIENT, TARGET, TARGET_LOGIT, read_card
from tests.helpers import MODELS_DIR
from training.data import Mnist
from training.explain import check_gradients
from training.gradient_graph import explain_model
from training.gradients import UnsupportedGraph


def tiny_cnn(rng: np.random.Generator, *, pool: int = 2, stride: int = 1, extra: str | None = None) -> onnx.ModelProto:
    """image (N, 28, 28, 1) -> Transpose -> Conv -> Relu -> MaxPool (floor crop when 28 / pool is not whole) ->
    GlobalAveragePool -> Flatten -> MatMul -> Add -> logits (N, 10); `extra` inserts one op after the Relu."""
    weights = {
        "w": rng.normal(0, 0.5, (4, 1, 3, 3)),
        "b": rng.normal(0, 0.1, 4),
        "m": rng.normal(0, 1, (4, 10)),
        "c": rng.normal(0, 0.1, 10),
    }
    after = "relu"
    nodes = [
        helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "w", "b"], ["conv"], pads=[1, 1, 1, 1], strides=[stride, stride]),
        helper.make_node("Relu", ["conv"], ["relu"]),
    ]
    if extra is not None:
        nodes.append(helper.make_node(extra, ["relu"], ["extra"]))
        after = "extra"
    nodes += [
        helper.make_node("MaxPool", [after], ["pool"], kernel_shape=[pool, pool], strides=[pool, pool]),
        helper.make_node("GlobalAveragePool", ["pool"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("MatMul", ["flat", "m"], ["scores"]),
        helper.make_node("Add", ["scores", "c"], ["logits"]),
    ]
    initializers = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 28, 28, 1])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def sessions(model: onnx.ModelProto) -> tuple[ort.InferenceSession, ort.InferenceSession]:
    explain, _ = explain_model(model)
    return ort.InferenceSession(model.SerializeToString()), ort.InferenceSession(explain.SerializeToString())


@pytest.mark.parametrize(("pool", "stride"), [(2, 1), (3, 1), (2, 2)])  # 3: 28 -> 9, two rows cropped; stride 2
def test_gradient_matches_finite_differences_on_a_tiny_cnn(pool: int, stride: int) -> None:
    rng = np.random.default_rng(0)
    model, explainer = sessions(tiny_cnn(rng, pool=pool, stride=stride))
    image = rng.random((1, 28, 28, 1)).astype(np.float32)  # random values: no ties in the max-pool
    logit, grad = explainer.run([TARGET_LOGIT, INPUT_GRADIENT], {"image": image, TARGET: np.array([3])})
    assert logit[0] == pytest.approx(model.run(["logits"], {"image": image})[0][0, 3], abs=1e-5)
    steps = np.eye(784, dtype=np.float32).reshape(784, 28, 28, 1) * 1e-3
    up = model.run(["logits"], {"image": image + steps})[0][:, 3].astype(np.float64)
    down = model.run(["logits"], {"image": image - steps})[0][:, 3].astype(np.float64)
    numeric = (up - down) / 2e-3
    assert np.corrcoef(numeric, grad.reshape(-1))[0, 1] > 0.999
    assert np.mean(np.abs(numeric - grad.reshape(-1)) > 0.05 * np.abs(grad).max()) < 0.01  # a few kinks at most


def test_an_unknown_op_on_the_path_is_named() -> None:
    with pytest.raises(UnsupportedGraph, match="op Sigmoid"):
        explain_model(tiny_cnn(np.random.default_rng(0), extra="Sigmoid"))


@pytest.mark.parametrize("name", ["cnn", "lenet", "softmax", "svm"])
def test_committed_explain_files_are_what_the_builder_writes(name: str, mnist_sample: Mnist) -> None:
    card = read_card(MODELS_DIR / name)
    assert card.explain is not None
    written = onnx.load(MODELS_DIR / name / card.explain.file)
    rebuilt, layer = explain_model(onnx.load(MODELS_DIR / name / card.file))
    assert rebuilt.SerializeToString() == written.SerializeToString()
    assert layer == card.explain.gradcam_layer
    model = ort.InferenceSession(str(MODELS_DIR / name / card.file))
    check = check_gradients(model, ort.InferenceSession(rebuilt.SerializeToString()), mnist_sample.test.images[:1])
    assert check.min_correlation > 0.99
    assert check.pixels_off < 0.02
