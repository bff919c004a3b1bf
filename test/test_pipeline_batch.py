"""Pipeline.run_batch: several images through one network, each result as if run alone."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from batch_models import batched_selfie_model
from node_harness import camera_frame
from trt_perception.pipeline import Pipeline
from trt_perception.spec import load_model_spec

# Three cameras of different sizes (rgb8) and one BGR frame: every image is stretched to 256x256.
IMAGES = [
    (camera_frame("astronaut.png", 480, 640), "RGB"),
    (camera_frame("coffee.png", 240, 320), "RGB"),
    (camera_frame("motorcycle_left.png", 360, 640)[:, :, ::-1].copy(), "BGR"),
]


def selfie_pipeline(model: Path | None = None) -> Pipeline:
    spec = load_model_spec("selfie_segmentation")
    return Pipeline.from_spec(spec if model is None else dataclasses.replace(spec, model=model))


@pytest.fixture(scope="module")
def single_results() -> list[np.ndarray]:
    pipeline = selfie_pipeline()
    try:
        return [pipeline.run(pixels, order).labels.copy() for pixels, order in IMAGES]
    finally:
        pipeline.close()


@pytest.mark.parametrize("batch", [None, 2, 1], ids=["dynamic", "fixed2", "fixed1"])
def test_run_batch_equals_run_per_image(tmp_path: Path, batch: int | None, single_results: list[np.ndarray]) -> None:
    pipeline = selfie_pipeline(batched_selfie_model(tmp_path / "selfie.onnx", batch))
    try:
        assert pipeline.batch_capacity == batch
        results = pipeline.run_batch(IMAGES)
        for result, expected, (pixels, _) in zip(results, single_results, IMAGES, strict=True):
            assert result.labels.shape == pixels.shape[:2]
            np.testing.assert_array_equal(result.labels, expected)
            assert 0.0 < result.labels.mean() < 1.0  # a real mask, not all one class
        inference_ms = [result.timings.milliseconds["inference"] for result in results]
        # dynamic: one inference for all three; fixed 2: two, the first shared by two images; 1: three
        shared = {None: [0, 0, 0], 2: [0, 0, 1], 1: [0, 1, 2]}[batch]
        for first in range(3):
            for second in range(first + 1, 3):
                assert (inference_ms[first] == inference_ms[second]) == (shared[first] == shared[second])
        # a second batch reuses the buffers and still gives each image its own result
        again = pipeline.run_batch(IMAGES[::-1])
        for result, expected in zip(again, single_results[::-1], strict=True):
            np.testing.assert_array_equal(result.labels, expected)
    finally:
        pipeline.close()


def test_run_batch_of_one_model_the_same_as_run(single_results: list[np.ndarray]) -> None:
    pipeline = selfie_pipeline()
    try:
        assert pipeline.batch_capacity == 1
        for result, expected in zip(pipeline.run_batch(IMAGES), single_results, strict=True):
            np.testing.assert_array_equal(result.labels, expected)
    finally:
        pipeline.close()


@pytest.mark.parametrize("batch", [None, 2], ids=["dynamic", "fixed2"])
def test_one_image_on_a_batched_model_equals_run_on_the_batch_1_model(
    tmp_path: Path, batch: int | None, single_results: list[np.ndarray]
) -> None:
    # a single-camera node sends one image per run_batch; a fixed batch of 2 gets it zero-padded
    pipeline = selfie_pipeline(batched_selfie_model(tmp_path / "selfie.onnx", batch))
    try:
        [result] = pipeline.run_batch(IMAGES[:1])
        np.testing.assert_array_equal(result.labels, single_results[0])
        np.testing.assert_array_equal(pipeline.run(*IMAGES[1]).labels, single_results[1])
    finally:
        pipeline.close()
