"""Tiny ONNX graphs with known outputs, built with onnx.helper and run with ONNX Runtime.

They stand in for real exports in decoder tests: the test knows what each graph computes, so it can
derive the expected decoded result by hand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper

OPSET = 17

ShapeDims = Sequence[int | str | None]


def _value(name: str, elem_type: int, shape: ShapeDims) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, list(shape))


def build_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Mapping[str, ShapeDims],
    outputs: Mapping[str, tuple[int, ShapeDims]],
    initializers: Sequence[onnx.TensorProto] = (),
) -> onnx.ModelProto:
    """A checked model with float32 ``inputs`` (name -> shape) and ``outputs`` (name -> (type, shape))."""
    graph = helper.make_graph(
        list(nodes),
        "test_graph",
        [_value(name, TensorProto.FLOAT, shape) for name, shape in inputs.items()],
        [_value(name, elem_type, shape) for name, (elem_type, shape) in outputs.items()],
        list(initializers),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def run_model(
    model: onnx.ModelProto, feeds: Mapping[str, npt.NDArray] | None = None
) -> dict[str, npt.NDArray]:
    """Run ``model`` on CPU with ONNX Runtime; without ``feeds``, every input gets zeros of shape 1s."""
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    if feeds is None:
        feeds = {
            meta.name: np.zeros([dim if isinstance(dim, int) else 1 for dim in meta.shape], np.float32)
            for meta in session.get_inputs()
        }
    names = [meta.name for meta in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(feeds)), strict=True))


def constant_outputs_model(outputs: Mapping[str, npt.NDArray]) -> onnx.ModelProto:
    """A graph emitting fixed tensors (e.g. detection rows) whatever its dummy ``image`` input holds."""
    nodes = [
        helper.make_node(
            "Constant", [], [name], value=numpy_helper.from_array(np.asarray(array), f"{name}_value")
        )
        for name, array in outputs.items()
    ]
    declared = {
        name: (helper.np_dtype_to_tensor_dtype(np.asarray(array).dtype), np.asarray(array).shape)
        for name, array in outputs.items()
    }
    return build_model(nodes, {"image": [1, 3, 4, 4]}, declared)


def rows_detector_spec(directory: Path, rows: npt.NDArray[np.float32], max_detections: int) -> Path:
    """A detection spec (classes a, b; 4x4 input) over ``constant_outputs_model`` emitting ``rows`` of
    x1, y1, x2, y2, score, class, written with its model into ``directory``; the spec's path."""
    onnx.save(constant_outputs_model({"rows": rows}), directory / "rows.onnx")
    spec = directory / "rows.yaml"
    spec.write_text(
        "task: detection\nmodel: rows.onnx\nlabels: [a, b]\n"
        "input: {layout: NCHW, size: [4, 4], resize: fixed_shape, normalization: {type: unit}}\n"
        "decoder: {type: rows, output: rows, columns: [x1, y1, x2, y2, score, class]}\n"
        f"detection: {{score_threshold: 0.5, nms_iou: 0.45, max_detections: {max_detections}}}\n")
    return spec


def colour_scores_model(downsample: int = 1, layout: str = "NCHW") -> onnx.ModelProto:
    """Class scores = the image's own R, G, B planes (average-pooled by ``downsample``).

    Input ``image`` float32 ``[1,3,H,W]``; output ``scores`` ``[1,3,H/d,W/d]`` (NCHW) or
    ``[1,H/d,W/d,3]`` (NHWC). The argmax is the dominant colour: 0 red, 1 green, 2 blue.
    """
    nodes: list[onnx.NodeProto] = []
    current = "image"
    if downsample > 1:
        nodes.append(
            helper.make_node(
                "AveragePool", [current], ["pooled"], kernel_shape=[downsample] * 2, strides=[downsample] * 2
            )
        )
        current = "pooled"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", [current], ["scores"], perm=[0, 2, 3, 1]))
        shape: ShapeDims = [1, "h", "w", 3]
    else:
        nodes.append(helper.make_node("Identity", [current], ["scores"]))
        shape = [1, 3, "h", "w"]
    return build_model(nodes, {"image": [1, 3, "H", "W"]}, {"scores": (TensorProto.FLOAT, shape)})


def colour_labels_model(
    downsample: int = 1, shape: str = "B1HW", dtype: int = TensorProto.INT64
) -> onnx.ModelProto:
    """The dominant colour's index computed in the graph (ArgMax), as a fused-argmax model outputs it.

    ``shape`` of output ``labels``: ``B1HW`` (keepdims), ``BHW`` or ``BHW1``; ``dtype`` int64 or int32.
    """
    scores = colour_scores_model(downsample)
    nodes = list(scores.graph.node)
    nodes.append(helper.make_node("ArgMax", ["scores"], ["argmax"], axis=1, keepdims=int(shape == "B1HW")))
    current = "argmax"
    if shape == "BHW1":
        nodes.append(helper.make_node("Unsqueeze", [current, "last_axis"], ["unsqueezed"]))
        current = "unsqueezed"
    nodes.append(helper.make_node("Cast", [current], ["labels"], to=dtype))
    dims = {"B1HW": [1, 1, "h", "w"], "BHW": [1, "h", "w"], "BHW1": [1, "h", "w", 1]}[shape]
    last_axis = numpy_helper.from_array(np.array([3], np.int64), "last_axis")
    return build_model(nodes, {"image": [1, 3, "H", "W"]}, {"labels": (dtype, dims)}, [last_axis])


def activation_model(op_type: str, shape: ShapeDims) -> onnx.ModelProto:
    """``y = op(x)`` for one elementwise op (``Sigmoid``, ``Identity``), input ``x`` output ``y``."""
    return build_model(
        [helper.make_node(op_type, ["x"], ["y"])], {"x": shape}, {"y": (TensorProto.FLOAT, shape)}
    )


def softmax_model(num_logits: int) -> onnx.ModelProto:
    """Softmax over the last axis of ``logits`` ``[1,Q,num_logits]``, output ``probabilities``."""
    shape: ShapeDims = [1, "q", num_logits]
    return build_model(
        [helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1)],
        {"logits": shape},
        {"probabilities": (TensorProto.FLOAT, shape)},
    )


def yolo_head_model(num_classes: int, version: str) -> onnx.ModelProto:
    """A YOLO head assembled from its parts, as the real exports lay it out.

    Inputs ``boxes [1,N,4]`` (cx,cy,w,h), ``class_scores [1,N,C]`` and for v5 ``objectness [1,N,1]``.
    Output ``output0``: v5 ``[1,N,5+C]`` = concat(boxes, objectness, scores); v8 ``[1,4+C,N]`` =
    transpose(concat(boxes, scores)).
    """
    parts = ["boxes", "objectness", "class_scores"] if version == "v5" else ["boxes", "class_scores"]
    inputs: dict[str, ShapeDims] = {
        "boxes": [1, "n", 4],
        "objectness": [1, "n", 1],
        "class_scores": [1, "n", num_classes],
    }
    inputs = {name: inputs[name] for name in parts}
    if version == "v5":
        nodes = [helper.make_node("Concat", parts, ["output0"], axis=2)]
        out: ShapeDims = [1, "n", 5 + num_classes]
    else:
        nodes = [
            helper.make_node("Concat", parts, ["rows"], axis=2),
            helper.make_node("Transpose", ["rows"], ["output0"], perm=[0, 2, 1]),
        ]
        out = [1, 4 + num_classes, "n"]
    return build_model(nodes, inputs, {"output0": (TensorProto.FLOAT, out)})
