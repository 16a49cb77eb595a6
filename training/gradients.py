"""Gradient graphs without TensorFlow: reverse-mode differentiation of a committed ONNX file, written as ONNX.

tf2onnx cannot convert TensorFlow's gradient graphs (ShapeN and the *Grad ops are unsupported), so this module
reads `models/<name>/model.onnx`, walks the forward path from `image` to `logits` backwards, and emits one
backward node group per forward node. The result, `explain.onnx`, takes `image` (N, 28, 28, 1) and `target` (N,)
int64 and returns `target_logit` (N,), `input_gradient` (N, 28, 28, 1) = d target_logit / d image, and for a CNN
the last convolution's post-ReLU maps and their gradient (Grad-CAM). Only the ops these models use are known; any
other op on the path is a loud UnsupportedGraph naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import onnx
from onnx import helper, numpy_helper

LOGITS = "logits"
OPSET = 17  # ScatterElements with reduction="add" needs 16
MIN_CONV_CHANNELS = 8

Shape = list[int | None]


class UnsupportedGraph(Exception):
    """The forward graph holds an op (or an op configuration) this builder cannot differentiate."""


@dataclass
class Builder:
    """The backward nodes and constants being emitted, with what is known about the forward graph."""

    constants: dict[str, npt.NDArray[np.generic]]
    shapes: dict[str, Shape]
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    extra_outputs: dict[str, list[str]] = field(default_factory=dict)  # forward node output 0 -> outputs to add
    count: int = 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"grad/{hint}_{self.count}"

    def add(self, op: str, inputs: list[str], hint: str, **attrs: object) -> str:
        output = self.name(hint)
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def constant(self, value: npt.ArrayLike, hint: str, dtype: type = np.float32) -> str:
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def const_input(self, node: onnx.NodeProto, index: int) -> npt.NDArray[np.generic]:
        name = node.input[index]
        if name not in self.constants:
            raise UnsupportedGraph(f"{node.op_type} {node.name!r}: input {index} ({name}) must be a constant")
        return self.constants[name]

    def static_shape(self, tensor: str) -> Shape:
        shape = self.shapes.get(tensor)
        if shape is None:
            raise UnsupportedGraph(f"the shape of {tensor!r} is unknown; the builder needs it")
        return shape


Rule = Callable[[Builder, onnx.NodeProto, str], dict[str, str]]


def attributes(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _reshape_back(b: Builder, node: onnx.NodeProto, dy: str) -> dict[str, str]:
    """Reshape, Flatten, Squeeze, Unsqueeze: the gradient is dy in the input's shape."""
    shape = b.add("Shape", [node.input[0]], "shape")
    return {node.input[0]: b.add("Reshape", [dy, shape], f"{node.op_type.lower()}_back")}


def _identity_back(b: Builder, node: onnx.NodeProto, dy: str) -> dict[str, str]:
    return {node.input[0]: dy}


def _transpose_back(b: Builder, node: onnx.NodeProto, dy: str) -> dict[str, str]:
    perm = attributes(node).get("perm")
    if perm is None:
        perm = list(range(len(b.static_shape(node.input[0]))))[::-1]
    inverse = np.argsort(np.asarray(perm)).tolist()
    return {node.input[0]: b.add("Transpose", [dy], "transpose_back", perm=inverse)}


def _relu_back(b: Builder, node: onnx.NodeProto, dy: str) -> dict[str, str]:
    # Sign of the ReLU's output is its 0/1 mask; Sign and Mul cost cnn's IG a third of Greater and Where (9.7 ms).
    mask = b.add("Sign", [node.output[0]], "relu_mask")
    return {node.input[0]: b.add("Mul", [dy, mask], "relu_back")}


def _conv_back(b: Builder, node: onnx.NodeProto, dy: str) -> dict[str, str]:
    """d/dx of a convolution is the transposed convolution with the same weights, pads, strides and groups."""
    attrs = attributes(node)
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise UnsupportedGraph(f"Conv {node.name!r}: auto_pad {attrs['auto_pad']!r} (only explicit pads)")
    weights = b.const_input(node, 1)
    if len(node.input) > 2 and node.input[2]:
        b.const_input(node, 2)  # a bias that depends on the image would need its own gradient
    kernel = list(weights.shape[2:])
    rank = len(kernel)
    strides = list(attrs.get("strides", [1] * rank))  # type: ignore[call-overload]
    dilations = list(attrs.get("dilations", [1] * rank))  # type: ignore[call-overload]
    pads = list(attrs.get("pads", [0] * 2 * rank))  # type: ignore[call-overload]
    x_shape, y_shape = b.static_shape(node.input[0])[2:], b.static_shape(node.output[0])[2:]
    output_padding = []
    for axis in range(rank):
        x, y = x_shape[axis], y_shape[axis]
        if x is None or y is None:
            raise UnsupportedGraph(f"Conv {node.name!r}: spatial sizes must be static")
        covered = (y - 1) * strides[axis] + (kernel[axis] - 1) * dilations[axis] + 1 - pads[axis] - pads[axis + rank]
        output_padding.append(x - covered)  # rows the strided windows never reached: gradient 0
        if not 0 <= output_padding[-1] < max(strides[axis], dilations[axis]):
            raise UnsupportedGraph(f"Conv {node.name!r}: cannot invert output size {y} to {x} on axis {axis}")
    # ONNX Runtime's Conv (NCHWc) beats its ConvTranspose when the gradient has several channels, and loses badly
    # with one: cnn at batch 34, conv3's backward 4.5 ms as a Conv, conv1's (32 -> 1 channel) 7.1 ms as a Conv and
    # 0.6 ms as a ConvTranspose.
    if strides == dilations == [1] * rank and attrs.get("group", 1) == 1 and weights.shape[1] >= MIN_CONV_CHANNELS:
        return {node.input[0]: _flipped_conv(b, node.input[0], dy, weights, pads)}
    dx = b.add(
        "ConvTranspose",
        [dy, node.input[1]],
        "conv_back",
        pads=pads,
        strides=strides,
        dilations=dilations,
        group=int(attrs.get("group", 1)),  # type: ignore[call-overload]
        kernel_shape=kernel,
        output_padding=output_padding,
    )
    return {node.input[0]: dx}


def _flipped_conv(b: Builder, x: str, dy: str, weights: npt.NDArray[np.generic], pads: list[int]) -> str:
    """The transposed convolution of stride 1 as a plain convolution: weights with input and output channels
    swapped and the kernel flipped, padded by k - 1 - p. ONNX Runtime's Conv is much faster than its
    ConvTranspose for gradients with many channels."""
    rank = weights.ndim - 2
    flipped = np.flip(weights.swapaxes(0, 1), axis=tuple(range(2, 2 + rank))).copy()
    kernel = weights.shape[2:]
    back_pads = [kernel[i % rank] - 1 - p for i, p in enumerate(pads)]
    if min(back_pads) < 0:
        raise UnsupportedGraph(f"convolution padding {pads} is wider than its kernel {kernel}")
    return b.add("Conv", [dy, b.constant(flipped, "flipped_weights")], "conv_back", pads=back_pads)


def _maxpool_back(b: Builder, node: onnx.NodeProto, dy: str) -> dict[str, str]:
    """Each window's gradient goes to the one element MaxPool picked (its Indices output; the first of tied
    maxima, as TensorFlow does), added up where windows overlap. Elements no window covers get 0."""
    attrs = attributes(node)
    if attrs.get("storage_order", 0) != 0 or any(d != 1 for d in attrs.get("dilations", [])):  # type: ignore[attr-defined]
        raise UnsupportedGraph(f"MaxPool {node.name!r}: storage_order and dilations other than the defaults")
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise UnsupportedGraph(f"MaxPool {node.name!r}: auto_pad {attrs['auto_pad']!r}")
    indices = f"{node.output[0]}/indices"
    b.extra_outputs[node.output[0]] = [indices]
    flat = b.constant([-1], "flat", np.int64)
    shape = b.add("Shape", [node.input[0]], "shape")
    zeros = b.add("Reshape", [b.add("ConstantOfShape", [shape], "zeros"), flat], "zeros_flat")
    scattered = b.add(
        "ScatterElements",
        [zeros, b.add("Reshape", [indices, flat], "indices_flat"), b.add("Reshape", [dy, flat], "dy_flat")],
        "maxpool_scatter",
        axis=0,
        reduction="add",
    )
    return {node.input[0]: b.add("Reshape", [scattered, shape], "maxpool_back")}


def _global_average_back(b: Builder, node: onnx.NodeProto, dy: str) -> dict[str, str]:
    spatial = b.static_shape(node.input[0])[2:]
    if any(size is None for size in spatial):
        raise UnsupportedGraph(f"GlobalAveragePool {node.name!r}: spatial sizes must be static")
    area = float(np.prod(spatial))  # type: ignore[arg-type]
    spread = b.add("Div", [dy, b.constant(area, "area")], "average")
    return {node.input[0]: b.add("Expand", [spread, b.add("Shape", [node.input[0]], "shape")], "gap_back")}


def _matmul_back(b: Builder, node: onnx.NodeProto, dy: str) -> dict[str, str]:
    """Y = X @ B with B constant and 2-D: dX = dY @ B^T, as a Gemm with transB (B is stored once)."""
    right = b.const_input(node, 1)
    if right.ndim != 2 or len(b.static_shape(node.input[0])) != 2:
        raise UnsupportedGraph(f"MatMul {node.name!r}: only (N, K) @ constant (K, M) is supported")
    return {node.input[0]: b.add("Gemm", [dy, node.input[1]], "matmul_back", transB=1)}


def _data_operand(b: Builder, node: onnx.NodeProto) -> int:
    """Which operand of a binary op depends on the image; the other must be a constant that broadcasts onto it."""
    data = [i for i, name in enumerate(node.input[:2]) if name not in b.constants]
    if len(data) != 1:
        raise UnsupportedGraph(f"{node.op_type} {node.name!r}: exactly one operand may depend on the image")
    x_shape, y_shape = b.static_shape(node.input[data[0]]), b.static_shape(node.output[0])
    if len(x_shape) != len(y_shape) or any(x != y for x, y in zip(x_shape, y_shape, strict=True) if x and y):
        raise UnsupportedGraph(f"{node.op_type} {node.name!r}: the image's operand {x_shape} is broadcast to {y_shape}")
    return data[0]


def _add_back(b: Builder, node: onnx.NodeProto, dy: str) -> dict[str, str]:
    operand = _data_operand(b, node)
    negate = node.op_type == "Sub" and operand == 1
    return {node.input[operand]: b.add("Neg", [dy], "sub_back") if negate else dy}


def _mul_back(b: Builder, node: onnx.NodeProto, dy: str) -> dict[str, str]:
    operand = _data_operand(b, node)
    return {node.input[operand]: b.add("Mul", [dy, node.input[1 - operand]], "mul_back")}


RULES: dict[str, Rule] = {
    "Reshape": _reshape_back,
    "Flatten": _reshape_back,
    "Squeeze": _reshape_back,
    "Unsqueeze": _reshape_back,
    "Identity": _identity_back,
    "Transpose": _transpose_back,
    "Relu": _relu_back,
    "Conv": _conv_back,
    "MaxPool": _maxpool_back,
    "GlobalAveragePool": _global_average_back,
    "MatMul": _matmul_back,
    "Add": _add_back,
    "Sub": _add_back,
    "Mul": _mul_back,
}
# The inputs through which the gradient flows; the others (shapes, axes, weights) are not on the data path.
DIFFERENTIABLE: dict[str, tuple[int, ...]] = dict.fromkeys(RULES, (0,)) | {"Add": (0, 1), "Sub": (0, 1), "Mul": (0, 1)}
NOT_DIFFERENTIABLE = frozenset({"Shape", "Size"})  # outputs describe the tensor's shape, not its values
