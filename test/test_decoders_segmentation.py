"""Segmentation decoders on tiny ONNX graphs whose correct label images are known by construction."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto

from onnx_builders import (
    activation_model,
    colour_labels_model,
    colour_scores_model,
    constant_outputs_model,
    run_model,
)
from trt_perception.decoders import create_decoder
from trt_perception.decoders.segmentation import BinaryDecoder, SegmentationDecoder, label_dtype, planar_argmax
from trt_perception.errors import InferenceError, SpecError
from trt_perception.geometry import ResizeGeometry
from trt_perception.pipeline import Pipeline

IMAGES = Path(__file__).resolve().parent / "fixtures" / "images"

# Colour of each class in the colour graphs (the class is the dominant channel); padding is class 2.
CLASS_COLOURS = np.array([[0.9, 0.1, 0.0], [0.1, 0.8, 0.2], [0.0, 0.1, 0.7]], np.float32)
PAD_CLASS = 2


@contextmanager
def opencv_without_ipp() -> Iterator[None]:
    """OpenCV's own code instead of Intel IPP's for the calls inside (a per-thread OpenCV setting)."""
    previous = cv2.ipp.useIPP()
    cv2.ipp.setUseIPP(False)
    try:
        yield
    finally:
        cv2.ipp.setUseIPP(previous)


def segmentation_decoder(config: dict, num_classes: int | None = -1) -> SegmentationDecoder:
    """The decoder for ``config``; ``num_classes`` -1: as many labels as it gives (2 for binary, else 3)."""
    if num_classes == -1:
        num_classes = 2 if config.get("type") == "binary" else 3
    decoder = create_decoder("segmentation", config, num_classes)
    assert isinstance(decoder, SegmentationDecoder)
    return decoder


def random_grid(shape: tuple[int, int], seed: int) -> npt.NDArray[np.int64]:
    """Random classes 0/1 (never the padding class, so leaked padding is visible)."""
    return np.random.default_rng(seed).integers(0, 2, shape)


def upscale(grid: npt.NDArray, size: tuple[int, int]) -> npt.NDArray:
    """Blow a grid up to ``size`` by repeating each cell (size must be a whole multiple)."""
    fy, fx = size[0] // grid.shape[0], size[1] // grid.shape[1]
    assert (grid.shape[0] * fy, grid.shape[1] * fx) == size
    return np.repeat(np.repeat(grid, fy, axis=0), fx, axis=1)


def network_image(grid: npt.NDArray, geometry: ResizeGeometry) -> npt.NDArray[np.float32]:
    """The NCHW network input the preprocessor would produce from an image coloured by ``grid``."""
    canvas = np.full(geometry.network_size, PAD_CLASS)
    top, left = geometry.offset
    height, width = geometry.content_size
    canvas[top : top + height, left : left + width] = upscale(grid, geometry.content_size)
    return CLASS_COLOURS[canvas].transpose(2, 0, 1)[None].copy()


# (grid, source size, network size, placement): every content size is a whole multiple of the grid.
LETTERBOX_CASES = [
    ((30, 20), (30, 20), (60, 60), "centered"),  # upscaled x2, padded left and right
    ((6, 8), (24, 32), (64, 64), "centered"),  # upscaled x2, padded top and bottom
    ((6, 8), (24, 32), (64, 64), "top_left"),  # padding only at the bottom
    ((6, 8), (96, 128), (64, 64), "centered"),  # downscaled x2
]
# Cases whose grid cells and padding stay whole pixels at 1/4 of the network resolution.
QUARTER_RESOLUTION_CASES = LETTERBOX_CASES[1:]


@pytest.mark.parametrize(("grid_size", "source", "network", "placement"), LETTERBOX_CASES)
@pytest.mark.parametrize("downsample", [1, 2])
def test_labels_at_source_exactly_undo_letterbox(grid_size, source, network, placement, downsample) -> None:
    geometry = ResizeGeometry.letterbox(source, network, placement)
    grid = random_grid(grid_size, seed=sum(source) + downsample)
    outputs = run_model(colour_labels_model(downsample), {"image": network_image(grid, geometry)})
    labels = segmentation_decoder({"type": "labels"}).decode(outputs, geometry, at_source=True)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, upscale(grid, source))


@settings(max_examples=60, deadline=None)
@given(
    grid_size=st.tuples(st.integers(1, 6), st.integers(1, 6)),
    source_cell=st.integers(1, 5),
    downsample=st.sampled_from([1, 2, 4]),
    network_cell_factor=st.integers(1, 3),
    padding_factor=st.integers(0, 3),
    pad_columns=st.booleans(),
    placement=st.sampled_from(["centered", "top_left"]),
    seed=st.integers(0, 1000),
)
def test_labels_at_source_undo_letterbox_for_random_sizes(
    grid_size, source_cell, downsample, network_cell_factor, padding_factor, pad_columns, placement, seed
) -> None:
    """Any whole-cell letterbox: a grid of source cells is recovered exactly from a coarser output.

    The source image is a grid of ``source_cell``-pixel cells; the network sees each cell as
    ``network_cell`` pixels (a multiple of ``downsample``) plus padding in multiples of 2*downsample,
    so the output at 1/downsample resolution holds whole cells. Label maps are fed to the decoder as
    a model would emit them.
    """
    grid = random_grid(grid_size, seed)
    network_cell = downsample * network_cell_factor
    source = (grid_size[0] * source_cell, grid_size[1] * source_cell)
    content = (grid_size[0] * network_cell, grid_size[1] * network_cell)
    padding = 2 * downsample * padding_factor
    network = (content[0], content[1] + padding) if pad_columns else (content[0] + padding, content[1])
    geometry = ResizeGeometry.letterbox(source, network, placement)
    assert geometry.content_size == content
    network_labels = np.full(network, PAD_CLASS)
    top, left = geometry.offset
    network_labels[top : top + content[0], left : left + content[1]] = upscale(grid, content)
    outputs = {"labels": network_labels[None, ::downsample, ::downsample]}
    labels = segmentation_decoder({"type": "labels"}).decode(outputs, geometry, at_source=True)
    np.testing.assert_array_equal(labels, upscale(grid, source))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize(("grid_size", "source", "network", "placement"), QUARTER_RESOLUTION_CASES)
def test_logits_at_quarter_resolution_map_back_to_source(
    grid_size, source, network, placement, layout
) -> None:
    """SegFormer-style output at 1/4 of the network resolution, argmax then nearest upsampling."""
    geometry = ResizeGeometry.letterbox(source, network, placement)
    grid = random_grid(grid_size, seed=sum(network) + len(layout))
    outputs = run_model(colour_scores_model(4, layout), {"image": network_image(grid, geometry)})
    decoder = segmentation_decoder({"type": "logits", "output": "scores", "layout": layout})
    np.testing.assert_array_equal(decoder.decode(outputs, geometry, at_source=True), upscale(grid, source))


@pytest.mark.parametrize(
    ("shape", "dtype"), [("B1HW", TensorProto.INT64), ("BHW", TensorProto.INT32), ("BHW1", TensorProto.INT32)]
)
def test_labels_layouts_at_network_size(shape, dtype) -> None:
    geometry = ResizeGeometry.letterbox((24, 32), (64, 64))
    grid = random_grid((6, 8), seed=3)
    outputs = run_model(colour_labels_model(4, shape, dtype), {"image": network_image(grid, geometry)})
    labels = segmentation_decoder({"type": "labels", "output": "labels"}).decode(
        outputs, geometry, at_source=False
    )
    expected = np.full((64, 64), PAD_CLASS)
    expected[8:56, :] = upscale(grid, (48, 64))
    np.testing.assert_array_equal(labels, expected)


def test_labels_resampling_is_centre_aligned() -> None:
    """Network row of 3 pixels to a 2-pixel source row: source pixel centres fall at network x = 0.25
    and 1.75, so the nearest labels are those of network pixels 0 and 2 (symmetric, no half-pixel shift).
    """
    outputs = {"labels": np.array([[[0, 1, 2]]], np.int64)}
    labels = segmentation_decoder({"type": "labels"}).decode(
        outputs, ResizeGeometry.stretch((1, 2), (1, 3)), True
    )
    np.testing.assert_array_equal(labels, [[0, 2]])


def test_labels_beyond_256_classes_are_uint16() -> None:
    indices = np.array([[[0, 255, 256], [299, 1, 2]]], np.int64)
    outputs = run_model(constant_outputs_model({"argmax": indices}))
    labels = segmentation_decoder({"type": "labels"}, num_classes=300).decode(
        outputs, ResizeGeometry.stretch((4, 6), (2, 3)), at_source=True
    )
    assert labels.dtype == np.uint16
    np.testing.assert_array_equal(labels, np.repeat(np.repeat(indices[0], 2, 0), 2, 1))


def test_logits_before_argmax_interpolates_scores() -> None:
    """Two pixels, two classes, upsampled x4 in width; bilinear weights worked out by hand.

    Left pixel scores (1, 0), right pixel (0, 0.5). At output column x the source position is
    (x + 0.5) / 4 - 0.5: column 4 -> 0.625 gives class 0 (0.375 vs 0.3125), column 5 -> 0.875 gives
    class 1 (0.125 vs 0.4375). Argmax first would switch classes at column 4 instead.
    """
    scores = np.array([[[[1.0, 0.0]], [[0.0, 0.5]]]], np.float32)  # [1, C=2, H=1, W=2]
    outputs = {"scores": scores}
    geometry = ResizeGeometry.stretch((1, 8), (1, 8))
    before = segmentation_decoder({"type": "logits", "upsample": "before_argmax"}, 2)
    after = segmentation_decoder({"type": "logits"}, 2)
    np.testing.assert_array_equal(before.decode(outputs, geometry, True), [[0, 0, 0, 0, 0, 1, 1, 1]])
    np.testing.assert_array_equal(after.decode(outputs, geometry, True), [[0, 0, 0, 0, 1, 1, 1, 1]])


def bilinear(array: npt.NDArray, size: tuple[int, int]) -> npt.NDArray:
    """Reference half-pixel-centred bilinear resize of ``HxWxC`` with edge clamping."""

    def axis_weights(n_in: int, n_out: int) -> tuple[npt.NDArray, npt.NDArray, npt.NDArray]:
        position = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        low = np.floor(position).astype(int)
        high = np.minimum(low + 1, n_in - 1)
        return low, high, position - low

    y0, y1, wy = axis_weights(array.shape[0], size[0])
    x0, x1, wx = axis_weights(array.shape[1], size[1])
    rows = array[y0] * (1 - wy)[:, None, None] + array[y1] * wy[:, None, None]
    return rows[:, x0] * (1 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None]


def test_logits_before_argmax_many_classes_matches_reference() -> None:
    """300 classes (beyond cv2's per-call channel limit, beyond uint8) against a numpy reference."""
    rng = np.random.default_rng(7)
    scores = rng.normal(size=(1, 300, 5, 7)).astype(np.float32)
    geometry = ResizeGeometry.stretch((11, 13), (5, 7))
    labels = segmentation_decoder({"type": "logits", "upsample": "before_argmax"}, 300).decode(
        {"logits": scores}, geometry, at_source=True
    )
    expected = np.argmax(bilinear(scores[0].transpose(1, 2, 0).astype(np.float64), (11, 13)), axis=2)
    assert labels.dtype == np.uint16
    assert np.mean(labels == expected) > 0.99
    assert labels.max() > 255


def test_binary_probability_nhwc_threshold() -> None:
    rng = np.random.default_rng(1)
    probability = rng.uniform(size=(1, 16, 12, 1)).astype(np.float32)
    outputs = run_model(activation_model("Identity", [1, 16, 12, 1]), {"x": probability})
    decoder = segmentation_decoder({"type": "binary", "output": "y", "threshold": 0.3}, 2)
    labels = decoder.decode(outputs, ResizeGeometry.stretch((32, 24), (16, 12)), at_source=True)
    expected = upscale((probability[0, :, :, 0] > 0.3).astype(np.uint8), (32, 24))
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, expected)


def test_binary_sigmoid_logits_compare_as_probabilities() -> None:
    rng = np.random.default_rng(2)
    logits = rng.normal(scale=3, size=(1, 1, 20, 20)).astype(np.float32)
    probability = run_model(activation_model("Sigmoid", [1, 1, 20, 20]), {"x": logits})["y"]
    decoder = segmentation_decoder({"type": "binary", "activation": "sigmoid", "threshold": 0.7}, None)
    labels = decoder.decode({"logits": logits}, ResizeGeometry.stretch((20, 20), (20, 20)), at_source=False)
    np.testing.assert_array_equal(labels, probability[0, 0] > 0.7)
    assert 0 < labels.sum() < labels.size
    # the public cut (read by the GPU decoder) is the same threshold in logit units
    assert isinstance(decoder, BinaryDecoder)
    assert 1 / (1 + np.exp(-decoder.threshold_cut)) == pytest.approx(0.7)


def test_binary_before_threshold_interpolates() -> None:
    """Values 0 and 0.6, x4 upsampling: bilinear reaches 0.525 > 0.5 only from column 5 on."""
    outputs = {"mask": np.array([[[0.0, 0.6]]], np.float32)}  # [B, H, W]
    geometry = ResizeGeometry.stretch((1, 8), (1, 2))
    before = segmentation_decoder({"type": "binary", "upsample": "before_threshold"})
    after = segmentation_decoder({"type": "binary"})
    np.testing.assert_array_equal(before.decode(outputs, geometry, True), [[0, 0, 0, 0, 0, 1, 1, 1]])
    np.testing.assert_array_equal(after.decode(outputs, geometry, True), [[0, 0, 0, 0, 1, 1, 1, 1]])


@pytest.fixture(scope="module")
def selfie_probabilities() -> list[npt.NDArray[np.float32]]:
    """The bundled selfie model's 256x256 person probabilities for every fixture image."""
    pipeline = Pipeline.from_spec("selfie_segmentation", intra_op_threads=1)
    maps = []
    for path in sorted(IMAGES.glob("*.*g")):
        image = cv2.imread(str(path))
        tensor, _ = pipeline.preprocessor(image, "BGR")
        (probability,) = pipeline.backend.infer({pipeline.input_name: tensor}).values()
        maps.append(np.array(probability[0, :, :, 0], np.float32))
    pipeline.close()
    return maps


@pytest.mark.parametrize("source", [(1080, 1920), (720, 1280), (480, 640), (257, 255), (37, 53)])
def test_binary_before_threshold_equals_opencv_resize_then_threshold(selfie_probabilities, source) -> None:
    """Real probability maps (all fixture images), upsampled and downsampled: the labels are exactly
    OpenCV's own bilinear resize of the map (MediaPipe's arithmetic; not the Intel IPP resize that
    x86 builds use by default, which moves a label of quokka.jpg at 1080p and 720p) followed by the
    comparison, as uint8 0/1."""
    decoder = segmentation_decoder({"type": "binary", "threshold": 0.5, "upsample": "before_threshold"}, 2)
    geometry = ResizeGeometry.stretch(source, (256, 256))
    assert len(selfie_probabilities) >= 9
    with_person = 0
    for probability in selfie_probabilities:
        labels = decoder.decode({"mask": probability[None, :, :, None]}, geometry, at_source=True)
        with opencv_without_ipp():
            resized = cv2.resize(probability, source[::-1], interpolation=cv2.INTER_LINEAR)
        assert labels.dtype == np.uint8 and labels.shape == source and labels.flags.c_contiguous
        np.testing.assert_array_equal(labels, (resized > np.float32(0.5)).astype(np.uint8))
        with_person += bool(0 < labels.sum() < labels.size)
    assert with_person >= 2  # real boundaries between person and background


STRETCH = ResizeGeometry.stretch((4, 4), (4, 4))


@pytest.mark.parametrize(
    ("config", "outputs", "message"),
    [
        (
            {"type": "labels", "output": "argmax"},
            {"out": np.zeros((1, 4, 4), np.int64)},
            "'argmax'.*available outputs: out",
        ),
        (
            {"type": "labels"},
            {"a": np.zeros((1, 4, 4)), "b": np.zeros((1, 4, 4))},
            "decoder.output is not set.*a, b",
        ),
        ({"type": "labels"}, {"out": np.zeros((4, 4), np.int64)}, r"'out' has shape \[4, 4\]"),
        (
            {"type": "labels"},
            {"out": np.zeros((1, 2, 4, 4), np.int64)},
            r"'out' has shape \[1, 2, 4, 4\]; expected one channel",
        ),
        ({"type": "labels"}, {"out": np.zeros((1, 4, 4), np.float32)}, "'out' has dtype float32.*logits"),
        (
            {"type": "labels"},
            {"out": np.full((1, 4, 4), 3, np.int32)},
            "'out' holds class indices 3..3, outside 0..2",
        ),
        (
            {"type": "logits"},
            {"out": np.zeros((1, 3, 4), np.float32)},
            r"'out' has shape \[1, 3, 4\]; expected \[B,C,H,W\]",
        ),
        (
            {"type": "logits"},
            {"out": np.zeros((1, 4, 4, 4), np.float32)},
            "'out' has 4 class channels but the spec has 3 labels",
        ),
        (
            {"type": "logits", "layout": "NHWC"},
            {"out": np.zeros((1, 4, 4, 1), np.float32)},
            "at least 2 class channels.*binary",
        ),
        (
            {"type": "logits"},
            {"out": np.full((1, 3, 4, 4), np.nan, np.float32)},
            "'out' contains 48 NaN or infinite",
        ),
        (
            {"type": "binary"},
            {"out": np.array([[[np.inf, 0], [0, 0]]], np.float32)},
            "'out' contains 1 NaN or infinite",
        ),
        (
            {"type": "binary"},
            {"out": np.zeros((1, 0, 4), np.float32)},
            r"'out' is empty \(shape \[1, 0, 4\]\)",
        ),
    ],
)
def test_bad_outputs_raise_inference_error(config, outputs, message) -> None:
    with pytest.raises(InferenceError, match=message):
        segmentation_decoder(config).decode(outputs, STRETCH, at_source=True)


def test_labels_without_spec_labels_reject_values_beyond_uint8() -> None:
    outputs = {"out": np.full((1, 2, 2), 300, np.int64)}
    with pytest.raises(InferenceError, match="outside 0..255 .the spec has no labels"):
        segmentation_decoder({"type": "labels"}, None).decode(outputs, STRETCH, at_source=False)


@pytest.mark.parametrize(
    ("config", "num_classes", "message"),
    [
        ({"type": "argmax"}, 3, "decoder.type: 'argmax' is not one of labels, logits, binary"),
        ({"output": "x"}, 3, "decoder.type: required parameter is missing"),
        (
            {"type": "labels", "treshold": 0.5},
            3,
            r"decoder.treshold: unknown parameter \(allowed: output, type\)",
        ),
        ({"type": "logits", "layout": "CHW"}, 3, "decoder.layout: 'CHW' is not one of NCHW, NHWC"),
        ({"type": "logits", "upsample": "bilinear"}, 3, "decoder.upsample: 'bilinear' is not one of"),
        ({"type": "binary", "threshold": "high"}, 2, "decoder.threshold: expected a number"),
        (
            {"type": "binary", "threshold": 1.5, "activation": "sigmoid"},
            2,
            "decoder.threshold: with activation sigmoid",
        ),
        (
            {"type": "binary", "activation": "softmax"},
            2,
            "decoder.activation: 'softmax' is not one of none, sigmoid",
        ),
        ({"type": "labels", "output": 5}, 3, "decoder.output: expected a non-empty string"),
        ({"type": "labels"}, 0, "labels: expected at least one label"),
        # a mask has labels 0 and 1: one label (e.g. [person]) or three left a class unnamed
        ({"type": "binary"}, 1, "^labels: decoder type binary gives labels 0 .background. and 1 .foreground., "
                                "so it needs 2 labels; the spec has 1$"),
        ({"type": "binary", "activation": "sigmoid"}, 3, "^labels: decoder type binary .* the spec has 3$"),
        ({"type": "db_text"}, 1, "^labels: decoder type db_text .* the spec has 1$"),
        ({"type": "labels"}, 70000, "labels: 70000 classes"),
    ],
)
def test_bad_config_raises_spec_error(config, num_classes, message) -> None:
    with pytest.raises(SpecError, match=message):
        create_decoder("segmentation", config, num_classes)


def test_unknown_task_raises_spec_error() -> None:
    with pytest.raises(SpecError, match="task: 'tracking'"):
        create_decoder("tracking", {"type": "labels"}, None)


@pytest.mark.parametrize(("channels", "dtype"), [(2, np.float32), (21, np.float32), (300, np.float16)])
def test_planar_argmax_equals_numpy_argmax_including_ties(channels: int, dtype: type) -> None:
    rng = np.random.default_rng(channels)
    scores = rng.integers(-3, 4, (channels, 37, 53)).astype(dtype)  # few distinct values: many ties
    labels = planar_argmax(scores, label_dtype(channels))
    assert labels.dtype == label_dtype(channels)
    np.testing.assert_array_equal(labels, np.argmax(scores, axis=0))
