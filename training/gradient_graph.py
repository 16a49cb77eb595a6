"""explain.onnx assembled: the forward nodes that compute `logits`, a one-hot seed on the target, and the backward
nodes of training.gradients' rules, walked from `logits` back to `image`."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from app.cards import GRADCAM_GRADIENT, GRADCAM_MAPS, INPUT_GRADIENT, INPUT_NAME, TARGET, TARGET_LOGIT
from training.gradients import (
    DIFFERENTIABLE,
    LOGITS,
    NOT_DIFFERENTIABLE,
    OPSET,
    RULES,
    Builder,
    Shape,
    UnsupportedGraph,
    attributes,
)


def graph_constants(graph: onnx.GraphProto) -> dict[str, npt.NDArray[np.generic]]:
    """Initializers and Constant nodes' values, by tensor name."""
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and attributes(node).get("value") is not None:
            values[node.output[0]] = numpy_helper.to_array(attributes(node)["value"])  # type: ignore[arg-type]
    return values


def static_shapes(model: onnx.ModelProto) -> dict[str, Shape]:
    """Every tensor's shape that ONNX shape inference can tell; None marks an unknown (batch) dimension."""
    inferred = onnx.shape_inference.infer_shapes(model).graph
    shapes: dict[str, Shape] = {}
    for info in [*inferred.input, *inferred.value_info, *inferred.output]:
        dims = info.type.tensor_type.shape.dim
        shapes[info.name] = [d.dim_value if d.dim_value > 0 else None for d in dims]
    return shapes


def nodes_computing(graph: onnx.GraphProto, output: str) -> list[onnx.NodeProto]:
    """The nodes `output` depends on, in the graph's (topological) order."""
    producer = {name: node for node in graph.node for name in node.output}
    needed, pending = set(), [output]
    while pending:
        node = producer.get(pending.pop())
        if node is not None and id(node) not in needed:
            needed.add(id(node))
            pending.extend(node.input)
    return [node for node in graph.node if id(node) in needed]


def data_path(nodes: list[onnx.NodeProto]) -> tuple[list[onnx.NodeProto], set[str]]:
    """The nodes that carry the image's values forward, and the tensors that hold them; UnsupportedGraph for an
    op the builder cannot differentiate, or an image-dependent tensor in a non-differentiable input."""
    carries, path = {INPUT_NAME}, []
    for node in nodes:
        if node.op_type in NOT_DIFFERENTIABLE or not carries.intersection(node.input):
            continue
        if node.op_type not in RULES:
            raise UnsupportedGraph(
                f"op {node.op_type} ({node.name!r}) is on the path from image to logits; known: "
                f"{', '.join(sorted(RULES))}"
            )
        wrong = [i for i, name in enumerate(node.input) if name in carries and i not in DIFFERENTIABLE[node.op_type]]
        if wrong:
            raise UnsupportedGraph(f"{node.op_type} {node.name!r}: input {wrong[0]} depends on the image")
        path.append(node)
        carries.add(node.output[0])
    if LOGITS not in carries:
        raise UnsupportedGraph(f"{LOGITS!r} does not depend on {INPUT_NAME!r}")
    return path, carries


def last_relu_conv(path: list[onnx.NodeProto]) -> str | None:
    """The output of the ReLU right after the last convolution on the path: the maps Grad-CAM weighs."""
    consumers = {name: node for node in path for name in node.input}
    for node in reversed(path):
        if node.op_type == "Conv":
            after = consumers.get(node.output[0])
            return after.output[0] if after is not None and after.op_type == "Relu" else None
    return None


def backward(b: Builder, path: list[onnx.NodeProto], carries: set[str], seed: str) -> dict[str, str]:
    """d target_logit / d tensor for every tensor on the path, from the seed on logits."""
    pending: dict[str, list[str]] = {LOGITS: [seed]}
    total: dict[str, str] = {}
    for node in reversed(path):
        parts = pending.pop(node.output[0], [])
        if not parts:
            continue
        total[node.output[0]] = dy = parts[0] if len(parts) == 1 else b.add("Sum", parts, "sum")
        for name, grad in RULES[node.op_type](b, node, dy).items():
            if name in carries:
                pending.setdefault(name, []).append(grad)
    parts = pending.pop(INPUT_NAME, [])
    total[INPUT_NAME] = parts[0] if len(parts) == 1 else b.add("Sum", parts, "sum")
    return total


def _value(name: str, dtype: int, shape: Shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, [d if d else "batch" for d in shape])


def explain_model(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str | None]:
    """The gradient graph of a classifier whose `logits` depend on `image`, and the Grad-CAM layer (None for a
    model without convolutions)."""
    graph = model.graph
    forward = nodes_computing(graph, LOGITS)
    path, carries = data_path(forward)
    b = Builder(constants=graph_constants(graph), shapes=static_shapes(model))
    classes = b.static_shape(LOGITS)[1]
    onehot = b.add("OneHot", [TARGET, b.constant(classes, "depth", np.int64), b.constant([0, 1], "values")], "seed")
    picked = b.add("Mul", [LOGITS, onehot], "picked")
    b.nodes.append(
        helper.make_node("ReduceSum", [picked, b.constant([1], "axis", np.int64)], [TARGET_LOGIT], keepdims=0)
    )
    grads = backward(b, path, carries, onehot)
    copies = [_forward_copy(node, b.extra_outputs) for node in forward]
    outputs = [
        _value(TARGET_LOGIT, TensorProto.FLOAT, [None]),
        _value(INPUT_GRADIENT, TensorProto.FLOAT, b.static_shape(INPUT_NAME)),
    ]
    b.nodes.append(helper.make_node("Identity", [grads[INPUT_NAME]], [INPUT_GRADIENT]))
    layer = last_relu_conv(path)
    if layer is not None:
        b.nodes.append(helper.make_node("Identity", [layer], [GRADCAM_MAPS]))
        b.nodes.append(helper.make_node("Identity", [grads[layer]], [GRADCAM_GRADIENT]))
        shape = b.static_shape(layer)
        outputs += [_value(GRADCAM_MAPS, TensorProto.FLOAT, shape), _value(GRADCAM_GRADIENT, TensorProto.FLOAT, shape)]
    used = {name for node in [*copies, *b.nodes] for name in node.input}
    initializers = [t for t in graph.initializer if t.name in used] + b.initializers
    inputs = [next(i for i in graph.input if i.name == INPUT_NAME), _value(TARGET, TensorProto.INT64, [None])]
    explain = helper.make_graph([*copies, *b.nodes], f"{graph.name}_explain", inputs, outputs, initializers)
    result = helper.make_model(
        explain, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="training.gradients"
    )
    result.ir_version = model.ir_version
    onnx.checker.check_model(result)
    return result, layer


def _forward_copy(node: onnx.NodeProto, extra_outputs: dict[str, list[str]]) -> onnx.NodeProto:
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    copy.output.extend(extra_outputs.get(node.output[0], []))
    return copy
