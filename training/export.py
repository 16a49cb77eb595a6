"""Every model to one ONNX file with the same interface, checked for parity against the trained model.

Input `image`: float32 (N, 28, 28, 1) in [0, 1], white digit on black. Outputs `logits` and `probabilities`
(N, 10); then one output per activation layer, channel-major (N, C, H, W): conv1, conv2, ... for a CNN, and
`evidence` (N, 10, 28, 28) for a linear model: each class's weights times the centred input, whose sum plus the
bias is that class's logit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from app.cards import INPUT_NAME, CompanionFile, Parity
from training.linear import LinearModel

OPSET = 17
BATCH_DIM = "batch"
PARITY_TOLERANCE = 1e-4
EVIDENCE = "evidence"

Outputs = dict[str, npt.NDArray[np.float32]]


def linear_to_onnx(model: LinearModel, name: str) -> onnx.ModelProto:
    """A graph computing the linear model's scores, mean subtraction included."""
    weights = model.weights.astype(np.float32)  # (784, 10)
    initializers = [
        numpy_helper.from_array(np.array([-1, 784], dtype=np.int64), "flat_shape"),
        numpy_helper.from_array(np.array([-1, 10, 28, 28], dtype=np.int64), "map_shape"),
        numpy_helper.from_array(np.array(model.pixel_scale, dtype=np.float32), "scale"),
        numpy_helper.from_array(model.mean.astype(np.float32), "mean"),
        numpy_helper.from_array(weights, "weights"),
        numpy_helper.from_array(weights.T[np.newaxis], "weights_by_class"),  # (1, 10, 784)
        numpy_helper.from_array(model.bias.astype(np.float32), "bias"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "class_axis"),
    ]
    nodes = [
        helper.make_node("Reshape", [INPUT_NAME, "flat_shape"], ["flat"]),  # (N, 784)
        helper.make_node("Mul", ["flat", "scale"], ["scaled"]),
        helper.make_node("Sub", ["scaled", "mean"], ["centred"]),
        helper.make_node("MatMul", ["centred", "weights"], ["scores"]),  # (N, 10)
        helper.make_node("Add", ["scores", "bias"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("Unsqueeze", ["centred", "class_axis"], ["centred_3d"]),  # (N, 1, 784)
        helper.make_node("Mul", ["centred_3d", "weights_by_class"], ["evidence_flat"]),  # (N, 10, 784)
        helper.make_node("Reshape", ["evidence_flat", "map_shape"], [EVIDENCE]),  # (N, 10, 28, 28)
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, 28, 28, 1])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, [BATCH_DIM, 10]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [BATCH_DIM, 10]),
            helper.make_tensor_value_info(EVIDENCE, TensorProto.FLOAT, [BATCH_DIM, 10, 28, 28]),
        ],
        initializers,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="mnist-serve")
    proto.ir_version = 8  # readable by every onnxruntime >= 1.10
    onnx.checker.check_model(proto, full_check=True)
    return proto


def linear_reference(model: LinearModel, images: npt.NDArray[np.float32]) -> Outputs:
    """What the linear ONNX graph must output, computed in NumPy."""
    centred = images.reshape(len(images), -1) * np.float32(model.pixel_scale) - model.mean  # (N, 784)
    logits = centred @ model.weights + model.bias
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    evidence = centred[:, np.newaxis, :] * model.weights.T[np.newaxis]  # (N, 10, 784)
    return {
        "logits": logits,
        "probabilities": shifted / shifted.sum(axis=1, keepdims=True),
        EVIDENCE: evidence.reshape(-1, 10, 28, 28),
    }


def keras_to_onnx(model: object, activation_layers: Sequence[str]) -> tuple[onnx.ModelProto, Callable[..., Outputs]]:
    """Convert with tf2onnx; returns the graph and the Keras function it must match."""
    import keras
    import tensorflow as tf
    import tf2onnx

    assert isinstance(model, keras.Model)
    heads = keras.Model(
        model.inputs, [model.get_layer("logits").output, *(model.get_layer(n).output for n in activation_layers)]
    )
    signature = [tf.TensorSpec([None, 28, 28, 1], tf.float32, name=INPUT_NAME)]

    @tf.function(input_signature=signature)
    def serve(image: tf.Tensor) -> dict[str, tf.Tensor]:
        logits, *maps = heads(image, training=False)
        nchw = {name: tf.transpose(m, [0, 3, 1, 2]) for name, m in zip(activation_layers, maps, strict=True)}
        return {"logits": logits, "probabilities": tf.nn.softmax(logits), **nchw}

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=signature, opset=OPSET)
    _order_outputs(proto, ["logits", "probabilities", *activation_layers])

    def reference(images: npt.NDArray[np.float32]) -> Outputs:
        return {k: v.numpy() for k, v in serve(tf.constant(images)).items()}

    return proto, reference


def _order_outputs(proto: onnx.ModelProto, names: list[str]) -> None:
    """Put the graph outputs in the documented order and name the batch dimension alike everywhere."""
    by_name = {output.name: output for output in proto.graph.output}
    ordered = [by_name[name] for name in names]
    for tensor in [*proto.graph.input, *ordered]:
        tensor.type.tensor_type.shape.dim[0].dim_param = BATCH_DIM
    del proto.graph.output[:]
    proto.graph.output.extend(ordered)


def onnx_outputs(path: Path, images: npt.NDArray[np.float32]) -> Outputs:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, {INPUT_NAME: images}), strict=True))


def check_parity(path: Path, reference: Callable[..., Outputs], images: npt.NDArray[np.float32]) -> Parity:
    """Compare every output of the saved file with the trained model; raise if any exceeds the tolerance."""
    expected, actual = reference(images), onnx_outputs(path, images)
    if set(expected) != set(actual):
        raise ValueError(f"{path}: outputs {sorted(actual)} differ from the model's {sorted(expected)}")
    diffs = {name: float(np.abs(actual[name] - expected[name]).max()) for name in expected}
    worst = max(diffs, key=diffs.__getitem__)
    if diffs[worst] > PARITY_TOLERANCE:
        raise ValueError(f"{path}: output {worst} differs by {diffs[worst]:.2e} (> {PARITY_TOLERANCE:g})")
    return Parity(images=len(images), tolerance=PARITY_TOLERANCE, max_abs_diff=diffs)


def save(proto: onnx.ModelProto, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))


def write_companion(folder: Path, file: str, content: bytes) -> CompanionFile:
    """`content` written as folder/file, beside the model, and what its card section records of it: the service
    opens the file only while its bytes hash to this."""
    (folder / file).write_bytes(content)
    return CompanionFile(file=file, file_sha256=hashlib.sha256(content).hexdigest(), file_bytes=len(content))
