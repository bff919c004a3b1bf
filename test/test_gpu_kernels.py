"""GPU kernels against the CPU path (needs CuPy and a CUDA device; skipped otherwise).

bench/check_gpu.py runs the full matrix on a GPU machine; these are the quick versions.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from trt_perception.decoders import DetectionFilter, create_decoder, filter_detections
from trt_perception.geometry import ResizeGeometry
from trt_perception.gpu import gpu_available
from trt_perception.preprocess import Preprocessor
from trt_perception.results import Detections
from trt_perception.spec import DynamicSize, InputSpec, NormalizationSpec
from trt_perception.visualize import as_rgb, colorize, default_palette, overlay

pytestmark = pytest.mark.skipif(not gpu_available(), reason="CuPy with a CUDA device is not available (CPU-only machine)")

IMAGES = Path(__file__).parent / "fixtures" / "images"


@pytest.fixture(scope="module")
def cupy():
    import cupy

    return cupy


@pytest.mark.parametrize(
    "spec",
    [
        InputSpec(size=(256, 256), layout="NHWC", normalization=NormalizationSpec("unit")),
        InputSpec(size=DynamicSize(736, 32, 2048), color_order="BGR", resize="keep_aspect_ratio", pad_placement="top_left",
                  normalization=NormalizationSpec("symmetric")),
        InputSpec(size=(512, 384), dtype="float16", resize="keep_aspect_ratio", pad_value=(114.0, 114.0, 114.0),
                  normalization=NormalizationSpec("mean_std", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "unit")),
        InputSpec(size=(321, 123), dtype="uint8", normalization=NormalizationSpec("none"), interpolation="nearest"),
        InputSpec(size=(300, 300), normalization=NormalizationSpec("per_image_standardization")),
    ],
)
@pytest.mark.parametrize("order", ["RGB", "BGRA", "MONO"])
def test_preprocess_matches_cpu(cupy, spec: InputSpec, order: str) -> None:
    from trt_perception.gpu.preprocess import GpuPreprocessor

    rgb = cv2.cvtColor(cv2.imread(str(IMAGES / "astronaut.png")), cv2.COLOR_BGR2RGB)[:480, :500]
    pixels = {"RGB": rgb, "BGRA": cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA), "MONO": cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)}[order]
    padded = np.zeros((pixels.shape[0], pixels.shape[1] * (pixels.ndim == 3 and pixels.shape[2] or 1) + 7), np.uint8)
    view = padded[:, : padded.shape[1] - 7].reshape(pixels.shape)
    view[...] = pixels  # rows 7 bytes longer than the pixels, as a padded `step`
    expected, geometry = Preprocessor(spec)(view, order)
    gpu = GpuPreprocessor(spec)
    out = cupy.full(gpu.input_shape(geometry.network_size), 77, spec.dtype)
    actual, gpu_geometry = gpu(view, order, out=out)
    assert gpu_geometry == geometry and actual is out
    np.testing.assert_allclose(cupy.asnumpy(actual).astype(np.float64), expected.astype(np.float64), rtol=0, atol=1e-3)


@pytest.mark.parametrize(
    ("config", "channels"),
    [({"type": "logits", "layout": "NCHW"}, 19), ({"type": "logits", "layout": "NHWC", "upsample": "before_argmax"}, 7),
     ({"type": "logits", "layout": "NCHW", "upsample": "before_argmax"}, 3),
     ({"type": "binary", "threshold": 0.5}, None), ({"type": "binary", "activation": "sigmoid", "threshold": 0.3,
                                                     "upsample": "before_threshold"}, None), ({"type": "labels"}, 12)],
)
def test_segmentation_decoders_match_cpu(cupy, config: dict, channels: int | None) -> None:
    from trt_perception.gpu.segmentation import GpuSegmentationDecoder

    rng = np.random.default_rng(5)
    geometry = ResizeGeometry.letterbox((720, 1280), (512, 512))
    if config["type"] == "labels":
        tensor = rng.integers(0, channels, (1, 128, 128), dtype=np.int64)
    elif config["type"] == "binary":
        tensor = rng.standard_normal((1, 128, 128, 1)).astype(np.float32)  # both sides of either cut
    else:
        shape = (1, channels, 128, 128) if config["layout"] == "NCHW" else (1, 128, 128, channels)
        tensor = rng.standard_normal(shape).astype(np.float32)
    decoder = create_decoder("segmentation", config, channels)
    gpu_decoder = GpuSegmentationDecoder(decoder)
    for at_source in (True, False):
        expected = decoder.decode({"out": tensor}, geometry, at_source)
        actual = cupy.asnumpy(gpu_decoder.decode({"out": cupy.asarray(tensor)}, geometry, at_source))
        assert actual.dtype == expected.dtype and len(np.unique(expected)) > 1
        assert np.array_equal(actual, expected), f"{np.count_nonzero(actual != expected)} labels differ"


@pytest.mark.parametrize(
    ("config", "channels", "out_w"),
    [({"type": "binary", "threshold": 0.5, "upsample": "before_threshold"}, None, 250),  # SIMD tail: in sequence
     ({"type": "logits", "layout": "NCHW", "upsample": "before_argmax"}, 3, 96),  # OpenCV's scalar loop
     ({"type": "logits", "layout": "NHWC", "upsample": "before_argmax"}, 19, 97),
     ({"type": "logits", "layout": "NCHW", "upsample": "before_argmax"}, 4, 98),  # SIMD: in pairs, as blended
     ({"type": "logits", "layout": "NHWC", "upsample": "before_argmax"}, 132, 33)],  # groups of 128 and 4
)
def test_maps_twice_the_output_size_follow_opencvs_area_shortcut(cupy, config: dict, channels: int | None, out_w: int) -> None:
    """cv2.resize runs a map exactly twice the output's size as its area shortcut, whose sums in
    sequence round unlike the blend. Near-tie cells: in one channel 2, 2**-23, 2**-23, 2**-23 sum to
    2 + 2**-22 in pairs but to 2 in sequence (0.5 + 2**-24 or 0.5 after the 0.25), against a cut
    of 0.5 or a rival channel of four 0.5s."""
    from test_gpu_index_math import linear_float_twin
    from trt_perception.gpu.segmentation import GpuSegmentationDecoder

    out_h = 40
    rng = np.random.default_rng(out_w)
    planes = channels or 1
    scores = rng.standard_normal((2 * out_h, 2 * out_w, planes)).astype(np.float32) - 3.0
    cells = rng.random((out_h, out_w)) < 0.3
    rows, cols = np.nonzero(cells)
    tiny = np.float32(2.0**-23)
    near_tie = np.array([[2.0, tiny], [tiny, tiny]], np.float32)
    # the channel whose sum order decides: the second, or in every other cell the last (another
    # cv2.resize call's channel group when there are more than 128)
    rising = np.where(np.arange(len(rows)) % 2 == 0, min(1, planes - 1), planes - 1)
    for dy in (0, 1):
        for dx in (0, 1):
            scores[2 * rows + dy, 2 * cols + dx, rising] = near_tie[dy, dx]
            if planes > 1:
                scores[2 * rows + dy, 2 * cols + dx, 0] = 0.5
    tensor = scores.transpose(2, 0, 1)[None].copy() if config.get("layout") == "NCHW" else scores[None]
    geometry = ResizeGeometry.stretch((out_h, out_w), (2 * out_h, 2 * out_w))
    decoder = create_decoder("segmentation", config, channels)
    expected = decoder.decode({"out": tensor}, geometry, True)
    actual = cupy.asnumpy(GpuSegmentationDecoder(decoder).decode({"out": cupy.asarray(tensor)}, geometry, True))
    assert np.array_equal(actual, expected), f"{np.count_nonzero(actual != expected)} labels differ"
    blended = linear_float_twin(scores, out_h, out_w)
    blended_labels = (blended[:, :, 0] > 0.5) if planes == 1 else np.argmax(blended, axis=2)
    if channels == 4:  # OpenCV's SIMD loop sums in pairs: the blend's bits
        assert np.array_equal(blended_labels, expected)
    else:
        assert not np.array_equal(blended_labels, expected)


@pytest.mark.parametrize("channels", [4, 5])
def test_halved_maps_whose_sums_overflow_follow_opencv(cupy, channels: int) -> None:
    """OpenCV's area shortcut sums before it scales: two channels of about 3e38 both overflow to
    infinity there (a tie: the first wins), where a blend would keep them apart."""
    from trt_perception.gpu.segmentation import GpuSegmentationDecoder

    rng = np.random.default_rng(channels)
    scores = np.full((1, 32, 48, channels), -1.0, np.float32)
    scores[0, :, :, 0] = rng.uniform(3.0e38, 3.1e38, (32, 48))
    scores[0, :, :, 1] = rng.uniform(3.15e38, 3.3e38, (32, 48))
    geometry = ResizeGeometry.stretch((16, 24), (32, 48))
    decoder = create_decoder("segmentation", {"type": "logits", "layout": "NHWC", "upsample": "before_argmax"}, channels)
    expected = decoder.decode({"out": scores}, geometry, True)
    actual = cupy.asnumpy(GpuSegmentationDecoder(decoder).decode({"out": cupy.asarray(scores)}, geometry, True))
    assert np.count_nonzero(expected == 0) > 0  # overflowed ties
    np.testing.assert_array_equal(actual, expected)


def test_nonfinite_scores_are_rejected(cupy) -> None:
    from trt_perception.errors import InferenceError
    from trt_perception.gpu.segmentation import GpuSegmentationDecoder

    scores = np.zeros((1, 3, 8, 8), np.float32)
    scores[0, 1, 2, 3] = np.nan
    gpu_decoder = GpuSegmentationDecoder(create_decoder("segmentation", {"type": "logits", "output": "logits"}, 3))
    with pytest.raises(InferenceError, match="logits"):
        gpu_decoder.decode({"logits": cupy.asarray(scores)}, ResizeGeometry.stretch((8, 8), (8, 8)), True)


@pytest.mark.parametrize("agnostic", [False, True])
def test_nms_matches_cpu(agnostic: bool) -> None:
    from trt_perception.gpu.detection import filter_detections_gpu

    rng = np.random.default_rng(11)
    corner = rng.uniform(0, 300, (500, 2))
    boxes = np.hstack([corner, corner + rng.uniform(5, 120, (500, 2))]).astype(np.float32)
    scores = np.round(rng.uniform(0, 1, 500), 2).astype(np.float32)
    classes = rng.integers(0, 3, 500)
    detection_filter = DetectionFilter(0.2, 0.5, agnostic, 40, frozenset({0, 2}))
    expected = filter_detections(Detections(boxes, scores, classes), detection_filter)
    actual = filter_detections_gpu(boxes, scores, classes, detection_filter)
    np.testing.assert_array_equal(actual.boxes, expected.boxes)
    np.testing.assert_array_equal(actual.class_ids, expected.class_ids)


def test_colour_mask_and_overlay_match_cpu(cupy) -> None:
    from trt_perception.gpu.preprocess import GpuPreprocessor
    from trt_perception.gpu.visualize import GpuVisualizer

    rng = np.random.default_rng(2)
    labels = rng.integers(0, 25, (120, 160)).astype(np.uint8)
    bgr = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    palette = default_palette(19)
    visualizer = GpuVisualizer(palette)
    image, step = GpuPreprocessor(InputSpec(size=(8, 8))).upload(bgr)
    colours = colorize(labels, palette)
    np.testing.assert_array_equal(cupy.asnumpy(visualizer.colorize(cupy.asarray(labels))), colours)
    expected = overlay(as_rgb(bgr, "BGR"), colours, 0.3)
    np.testing.assert_array_equal(cupy.asnumpy(visualizer.overlay(cupy.asarray(labels), image, step, "BGR", 0.3)), expected)
