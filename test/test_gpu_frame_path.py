"""``SegmentationFramePath`` (the per-frame CUDA graphs) against the CPU path (needs CuPy and a CUDA
device; skipped otherwise). The references are OpenCV-based CPU functions (``Preprocessor``, the
CPU decoders, ``visualize``), checked against OpenCV elsewhere; here every published image must be
identical to them, on the graph's first (plain) frame and on its replays."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from trt_perception.decoders import create_decoder
from trt_perception.errors import InferenceError
from trt_perception.gpu import gpu_available
from trt_perception.pipeline import Pipeline
from trt_perception.preprocess import Preprocessor
from trt_perception.spec import InputSpec, ModelSpec, NormalizationSpec, load_model_spec
from trt_perception.visualize import default_palette

from test_gpu_pipeline import bgr_frame

pytestmark = pytest.mark.skipif(not gpu_available(), reason="CuPy with a CUDA device is not available (CPU-only machine)")

# The image an overlay is drawn on, as RGB, per channel order (OpenCV's conversions).
TO_RGB = {"BGR": cv2.COLOR_BGR2RGB, "BGRA": cv2.COLOR_BGRA2RGB, "MONO": cv2.COLOR_GRAY2RGB}


def reference_overlay(pixels: np.ndarray, order: str, colours: np.ndarray, alpha: float) -> np.ndarray:
    """The colours blended onto the image with OpenCV: ``image * (1 - alpha) + colours * alpha``."""
    rgb = pixels if order == "RGB" else cv2.cvtColor(pixels, TO_RGB[order])
    return cv2.addWeighted(rgb, 1.0 - alpha, colours, alpha, 0.0)


def make_path(spec: InputSpec, decoder, palette: np.ndarray, mapped: bool):
    from trt_perception.gpu.frame_path import SegmentationFramePath
    from trt_perception.gpu.preprocess import GpuPreprocessor
    from trt_perception.gpu.segmentation import GpuSegmentationDecoder

    return SegmentationFramePath(GpuPreprocessor(spec), GpuSegmentationDecoder(decoder), palette, mapped=mapped)


def assert_same_labels(actual: np.ndarray, decoder, scores: np.ndarray, geometry, at_source: bool) -> None:
    """Labels identical to the CPU decoder's, bilinear upsampling before the decision included (both
    use OpenCV's own x86 float arithmetic; see bench/check_gpu.py on aarch64)."""
    expected = decoder.decode({"out": scores}, geometry, at_source)
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    assert np.array_equal(actual, expected), f"{np.count_nonzero(actual != expected)} labels differ"


@pytest.mark.parametrize("mapped", [False, True])
@pytest.mark.parametrize(
    ("config", "channels"),
    [
        ({"type": "logits", "layout": "NCHW", "upsample": "after_argmax"}, 19),
        ({"type": "logits", "layout": "NHWC", "upsample": "before_argmax"}, 5),
        ({"type": "binary", "threshold": 0.4, "activation": "sigmoid", "upsample": "after_threshold"}, 1),
        ({"type": "binary", "threshold": 0.5, "upsample": "before_threshold"}, 1),
    ],
)
def test_frame_path_publishes_what_the_cpu_path_computes(config: dict, channels: int, mapped: bool) -> None:
    import cupy

    rng = np.random.default_rng()
    spec = InputSpec(size=(96, 128), resize="keep_aspect_ratio", color_order="RGB", normalization=NormalizationSpec("unit"))
    decoder = create_decoder("segmentation", config, channels if config["type"] == "logits" else None)
    palette = default_palette(max(channels, 2))
    path = make_path(spec, decoder, palette, mapped)
    cpu = Preprocessor(spec)
    for frame_index in range(3):  # first frame plain, then graph replays, then a new shape
        frame = bgr_frame("astronaut.png", (360, 640) if frame_index < 2 else (240, 200))
        frame = np.ascontiguousarray(np.roll(frame, 17 * frame_index, axis=1))  # different content per frame
        expected_tensor, geometry = cpu(frame, "BGR")
        tensor, gpu_geometry = path.upload(frame, "BGR")
        assert gpu_geometry == geometry
        np.testing.assert_allclose(cupy.asnumpy(tensor), expected_tensor, rtol=0, atol=1e-6)
        map_h, map_w = 24, 32
        if config["type"] == "logits":
            shape = (1, channels, map_h, map_w) if config["layout"] == "NCHW" else (1, map_h, map_w, channels)
        else:
            shape = (1, 1, map_h, map_w)
        scores = rng.standard_normal(shape).astype(np.float32)
        if config["type"] == "binary" and config.get("activation", "none") == "none":
            scores = 1 / (1 + np.exp(-scores))
        published = path.publish({"out": cupy.asarray(scores)}, geometry, True, True, True, 0.3, "BGR")
        assert_same_labels(published.labels, decoder, scores, geometry, True)
        colours = palette[published.labels]
        np.testing.assert_array_equal(published.color_mask, colours)
        np.testing.assert_array_equal(published.overlay, reference_overlay(frame, "BGR", colours, 0.3))
        labels_only = path.publish({"out": cupy.asarray(scores)}, geometry, False)
        assert_same_labels(labels_only.labels, decoder, scores, geometry, False)
        assert labels_only.color_mask is None and labels_only.overlay is None
    scores.reshape(-1)[rng.integers(scores.size)] = np.inf  # anywhere in the map, sampled or not
    with pytest.raises(InferenceError, match="NaN or infinite"):
        path.publish({"out": cupy.asarray(scores)}, geometry, True, True, True, 0.3, "BGR")


def kernel_selfie() -> ModelSpec:
    """The selfie spec with OpenCV's half-pixel sampling, which the GPU kernel implements (the bundled
    spec samples corner to corner as MediaPipe does: that spec takes the per-step path's CPU fallback)."""
    spec = load_model_spec("selfie_segmentation")
    return dataclasses.replace(spec, input=dataclasses.replace(spec.input, sampling="half_pixel"))


def test_bundled_selfie_takes_the_per_step_path_with_the_cpu_preprocessor() -> None:
    from trt_perception.gpu.pipeline import GpuPipeline

    spec = load_model_spec("selfie_segmentation")
    gpu_pipeline = GpuPipeline(Pipeline.from_spec(spec, backend_kind="onnxruntime"))
    assert gpu_pipeline.frame_path is None and gpu_pipeline.preprocessor.host_fallback
    frame_path_pipeline = GpuPipeline(Pipeline.from_spec(kernel_selfie(), backend_kind="onnxruntime"))
    assert frame_path_pipeline.frame_path is not None
    gpu_pipeline.close()
    frame_path_pipeline.close()


def test_frame_path_reads_a_frame_staged_in_place_and_rejects_nonfinite_scores() -> None:
    import cupy

    spec = kernel_selfie()
    pipeline = Pipeline.from_spec(spec, backend_kind="onnxruntime")
    path = make_path(spec.input, pipeline.decoder, default_palette(2), mapped=False)
    frame = bgr_frame("astronaut.png", (480, 640))
    staged = path.staging(frame.nbytes).reshape(frame.shape)
    np.copyto(staged, frame)
    expected = pipeline.run(frame, "BGR")
    for _ in range(3):
        tensor, geometry = path.upload(staged, "BGR")
        outputs = {name: cupy.asarray(value) for name, value in pipeline.backend.infer({pipeline.input_name: tensor.get()}).items()}
        np.testing.assert_array_equal(path.publish(outputs, geometry, True).labels, expected.labels)
    bad = {name: value.copy() for name, value in outputs.items()}
    bad[spec.decoder["output"]][0, 3, 4, 0] = np.nan
    with pytest.raises(InferenceError, match="NaN or infinite"):
        path.publish(bad, geometry, True)
    pipeline.close()


def test_gpu_pipeline_draws_colour_mask_and_overlay_on_the_device() -> None:
    from trt_perception.gpu.pipeline import GpuPipeline, Visuals

    spec = kernel_selfie()
    pipeline = Pipeline.from_spec(spec, backend_kind="onnxruntime")
    gpu_pipeline = GpuPipeline(Pipeline.from_spec(spec, backend_kind="onnxruntime"))
    gpu_pipeline.visuals = Visuals(color_mask=True, overlay=True, overlay_alpha=0.6)
    palette = np.asarray(spec.palette, np.uint8)
    for size in [(480, 640), (1080, 1920), (1080, 1920)]:
        frame = bgr_frame("astronaut.png", size)
        result = gpu_pipeline.run(frame, "BGR")
        expected = pipeline.run(frame, "BGR").labels
        np.testing.assert_array_equal(result.labels, expected)
        assert gpu_pipeline.published is not None
        colours = palette[expected]
        np.testing.assert_array_equal(gpu_pipeline.published.color_mask, colours)
        np.testing.assert_array_equal(gpu_pipeline.published.overlay, reference_overlay(frame, "BGR", colours, 0.6))
    gpu_pipeline.close()
    pipeline.close()


@pytest.mark.parametrize("mapped", [False, True])
@pytest.mark.parametrize(("order", "padding"), [("BGRA", 12), ("MONO", 5), ("RGB", 0)])
def test_frame_path_takes_every_encoding_with_padded_rows(order: str, padding: int, mapped: bool) -> None:
    """Frames as a camera driver sends them: other channel layouts, rows ``step`` bytes apart."""
    import cupy

    rgb = cv2.cvtColor(bgr_frame("quokka.jpg", (300, 400)), cv2.COLOR_BGR2RGB)
    converted = {"BGRA": cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA), "MONO": cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), "RGB": rgb}[order]
    height = converted.shape[0]
    row_bytes = converted[0].size
    buffer = np.full((height, row_bytes + padding), 0xAB, np.uint8)
    buffer[:, :row_bytes] = converted.reshape(height, -1)
    pixels = buffer[:, :row_bytes].reshape(converted.shape)  # a strided view, rows row_bytes + padding apart
    spec = InputSpec(size=(64, 64), resize="keep_aspect_ratio", color_order="BGR", normalization=NormalizationSpec("symmetric"))
    decoder = create_decoder("segmentation", {"type": "logits", "layout": "NCHW"}, 3)
    palette = default_palette(3)
    path = make_path(spec, decoder, palette, mapped)
    expected_tensor, geometry = Preprocessor(spec)(pixels, order)
    scores = np.random.default_rng().standard_normal((1, 3, 16, 16)).astype(np.float32)
    for _ in range(2):  # plain, then replayed
        tensor, _ = path.upload(pixels, order)
        np.testing.assert_allclose(cupy.asnumpy(tensor), expected_tensor, rtol=0, atol=1e-6)
        published = path.publish({"out": cupy.asarray(scores)}, geometry, True, True, True, 0.5, order)
        assert_same_labels(published.labels, decoder, scores, geometry, True)
        colours = palette[published.labels]
        np.testing.assert_array_equal(published.overlay, reference_overlay(pixels, order, colours, 0.5))
