"""Row bands on several cores: the same pixels as one call, every row once, errors raised to the caller."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import cv2
import numpy as np
import pytest

from trt_perception.preprocess import (
    BANDED_REMAP_MIN_BYTES,
    Preprocessor,
    affine_normalization,
    resize_with_sampling,
    sampling_maps,
)
from trt_perception import row_bands
from trt_perception.row_bands import MIN_ROWS_PER_BAND, RowBands, shared_row_bands
from trt_perception.spec import InputSpec, NormalizationSpec

from test_decoders_segmentation import opencv_without_ipp
from test_gpu_pipeline import bgr_frame



@contextmanager
def opencv_threads(count: int) -> Iterator[None]:
    """OpenCV's thread count set to ``count`` inside the block, the bands following it (whatever
    limit a node in this process set), both restored after."""
    previous, previous_limit = cv2.getNumThreads(), row_bands._band_limit
    cv2.setNumThreads(count)
    row_bands.limit_bands(None)
    try:
        yield
    finally:
        cv2.setNumThreads(previous)
        row_bands.limit_bands(previous_limit)


def test_each_row_is_worked_once_in_bands_on_several_threads() -> None:
    bands = RowBands(3)
    seen: list[tuple[int, int, int]] = []
    lock = threading.Lock()

    def record(start: int, stop: int) -> None:
        with lock:
            seen.append((start, stop, threading.get_ident()))

    with opencv_threads(3):
        bands.run(record, 1000)
    covered = sorted((start, stop) for start, stop, _ in seen)
    assert covered[0][0] == 0 and covered[-1][1] == 1000
    assert all(stop == following for (_, stop), (following, _) in zip(covered, covered[1:]))
    assert len(seen) == 3 and len({thread for _, _, thread in seen}) == 3


def test_a_band_limit_keeps_the_bands_while_opencv_runs_on_one_thread() -> None:
    bands = RowBands(2)
    threads: set[int] = set()
    lock = threading.Lock()

    def record(start: int, stop: int) -> None:
        with lock:
            threads.add(threading.get_ident())

    with opencv_threads(1):
        row_bands.limit_bands(2)  # what the nodes set (opencv_threads: 1): OpenCV's pool off, bands kept
        bands.run(record, 1000)
        assert len(threads) == 2 and row_bands.band_limit() == 2
        threads.clear()
        row_bands.limit_bands(None)  # back to following OpenCV: one thread, the caller's
        bands.run(record, 1000)
        assert threads == {threading.get_ident()}
    with pytest.raises(ValueError, match="count must be >= 1"):
        row_bands.limit_bands(0)


def test_the_nodes_opencv_threads_setting_keeps_one_band_per_core() -> None:
    perception_node = pytest.importorskip("trt_perception.ros.perception_node", reason="rclpy missing")
    with opencv_threads(cv2.getNumThreads()):  # restores both afterwards
        perception_node.use_opencv_threads(1)
        assert cv2.getNumThreads() == 1
        assert row_bands.band_limit() == cv2.getNumberOfCPUs()  # OpenCV's count: CPU quotas included
        perception_node.use_opencv_threads(0)
        # OpenCV's default again (a pool for more than one core where there are several), the bands following it
        assert row_bands.band_limit() == cv2.getNumThreads() >= min(2, len(os.sched_getaffinity(0)))


def test_one_opencv_thread_or_few_rows_keep_the_work_in_the_caller() -> None:
    bands = RowBands(4)
    calls: list[tuple[int, int, int]] = []

    def record(start: int, stop: int) -> None:
        calls.append((start, stop, threading.get_ident()))

    bands.run(record, MIN_ROWS_PER_BAND - 1)
    with opencv_threads(1):
        bands.run(record, 1000)
    assert calls == [(0, MIN_ROWS_PER_BAND - 1, threading.get_ident()), (0, 1000, threading.get_ident())]


def test_fewer_bands_than_asked_for_keep_the_work_in_one_piece() -> None:
    calls: list[tuple[int, int]] = []
    with opencv_threads(4):
        RowBands(2).run(lambda start, stop: calls.append((start, stop)), 1000, min_bands=3)
        assert calls == [(0, 1000)]
        calls.clear()
        RowBands(3).run(lambda start, stop: calls.append((start, stop)), 999, min_bands=3)
    assert sorted(calls) == [(0, 333), (333, 666), (666, 999)]


class RecordingBands(RowBands):
    """RowBands that records the bands it runs."""

    def __init__(self, bands: int) -> None:
        super().__init__(bands)
        self.worked: list[tuple[int, int]] = []

    def run(self, work: Callable[[int, int], None], rows: int, min_bands: int = 2) -> None:
        def recorded(start: int, stop: int) -> None:
            self.worked.append((start, stop))
            work(start, stop)

        super().run(recorded, rows, min_bands)


@pytest.mark.parametrize("size", [(1080, 1920), (1440, 2560), (1079, 1917)])
@pytest.mark.parametrize("compiled", [True, False])
def test_the_threshold_of_upsampled_scores_in_bands_equals_one_comparison(
    size: tuple[int, int], compiled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The selfie model's real output on a photo, upsampled and thresholded in four bands (forced
    here: this machine may have fewer cores), by numba's blend or the full resize, equals numpy's
    comparison of OpenCV's whole upsampled map."""
    from trt_perception.decoders import upsampling
    from trt_perception.pipeline import Pipeline

    if compiled and upsampling.compiled_kernels() is None:
        pytest.skip("numba is not installed")
    if not compiled:
        monkeypatch.setattr(upsampling, "compiled_kernels", lambda: None)
    pipeline = Pipeline.from_spec("selfie_segmentation")
    try:
        tensor, _ = pipeline.preprocessor(bgr_frame("astronaut.png", (480, 640)), "BGR")
        [output] = pipeline.backend.infer({pipeline.input_name: tensor}).values()
    finally:
        pipeline.close()
    probability = np.ascontiguousarray(output[0, :, :, 0])
    assert size[0] * size[1] * 4 >= upsampling.BANDED_THRESHOLD_MIN_BYTES
    bands = RecordingBands(4)
    monkeypatch.setattr(row_bands, "shared_row_bands", lambda: bands)
    with opencv_threads(4):
        labels = upsampling.threshold_resized(probability, size, 0.5)
    assert len(bands.worked) == 4
    with opencv_without_ipp():
        scores = cv2.resize(probability, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    expected = (scores > 0.5).astype(np.uint8)
    assert labels.dtype == np.uint8 and labels.shape == expected.shape
    np.testing.assert_array_equal(labels, expected)
    assert 0.05 < expected.mean() < 0.95  # a person and background


def test_the_argmax_of_upsampled_class_scores_in_bands_equals_opencv_then_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    """19 class maps of 128x128 (SegFormer's output size) to 1080p in four bands (forced), each band
    making its own horizontal pass: numpy's argmax of OpenCV's whole upsample."""
    from trt_perception.decoders import upsampling

    if upsampling.compiled_kernels() is None:
        pytest.skip("numba is not installed (the full resize's argmax runs in one piece)")
    scores = np.random.default_rng(19).standard_normal((128, 128, 19)).astype(np.float32)
    bands = RecordingBands(4)
    monkeypatch.setattr(row_bands, "shared_row_bands", lambda: bands)
    with opencv_threads(4):
        labels = upsampling.argmax_resized(scores, (1080, 1920), np.uint8)
    assert len(bands.worked) == 4
    with opencv_without_ipp():
        expected = np.argmax(cv2.resize(scores, (1920, 1080), interpolation=cv2.INTER_LINEAR), axis=2)
    np.testing.assert_array_equal(labels, expected)


def test_an_error_in_any_band_reaches_the_caller_and_the_bands_stay_usable() -> None:
    bands = RowBands(2)

    def fail_below_half(start: int, stop: int) -> None:
        if start >= 50:
            raise ValueError(f"band {start}..{stop}")

    done: list[int] = []
    with opencv_threads(2):
        with pytest.raises(ValueError, match="band 50..100"):
            bands.run(fail_below_half, 100)
        bands.run(lambda start, stop: done.extend(range(start, stop)), 100)
    assert sorted(done) == list(range(100))


@pytest.mark.parametrize("size", [(1080, 1920), (720, 1280), (480, 640)])
def test_banded_remap_equals_one_opencv_call_on_a_photo(size: tuple[int, int]) -> None:
    frame = bgr_frame("astronaut.png", size)
    assert (frame.nbytes >= BANDED_REMAP_MIN_BYTES) == (size != (480, 640))
    for sampling in ("asymmetric", "align_corners"):
        maps = sampling_maps(size, (256, 256), sampling)
        expected = cv2.remap(frame, *maps, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        assert np.array_equal(resize_with_sampling(frame, maps), expected)


MEAN_STD = NormalizationSpec(type="mean_std", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), range="unit")


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize(("dtype", "pixels"), [  # a 16-bit image cannot feed a uint8 input (refused)
    ("float32", "bgr8"), ("float32", "rgb16"), ("float32", "mono8"), ("float16", "bgr8"), ("float16", "rgb16"),
    ("uint8", "bgr8"), ("uint8", "mono8"),
])
@pytest.mark.parametrize("resize", ["fixed_shape", "keep_aspect_ratio"])
def test_a_large_frame_remapped_and_written_in_bands_equals_the_steps_in_one_call(
    layout: str, dtype: str, pixels: str, resize: str
) -> None:
    """A large 16:9 frame (remap, colour conversion and normalizing write run per band) against one
    ``cv2.remap`` of the whole frame, ``cv2.cvtColor`` and the float32 formula, bit for bit."""
    source_size = (1440, 2560) if pixels == "mono8" else (1080, 1920)  # over 2 MiB in every format
    bgr = bgr_frame("astronaut.png", source_size)
    frame, order, conversion = {
        "bgr8": (bgr, "BGR", cv2.COLOR_BGR2RGB),
        "rgb16": (cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.uint16) * 257 + 13, "RGB", None),
        "mono8": (cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), "MONO", cv2.COLOR_GRAY2RGB),
    }[pixels]
    assert frame.nbytes >= BANDED_REMAP_MIN_BYTES
    normalization = NormalizationSpec(type="none") if dtype == "uint8" else MEAN_STD
    spec = InputSpec(name="input", layout=layout, dtype=dtype, size=(192, 256), color_order="RGB", resize=resize,
                     sampling="asymmetric", pad_value=(114, 114, 114), normalization=normalization)
    with opencv_threads(2):
        tensor, geometry = Preprocessor(spec)(frame, order)
    (height, width), (top, left) = geometry.content_size, geometry.offset
    assert (height, width) == ((144, 256) if resize == "keep_aspect_ratio" else (192, 256))
    resized = cv2.remap(frame, *sampling_maps(source_size, (height, width), "asymmetric"), cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE)
    rgb = resized if conversion is None else cv2.cvtColor(resized, conversion)
    hwc = tensor[0] if layout == "NHWC" else tensor[0].transpose(1, 2, 0)
    content = hwc[top : top + height, left : left + width]
    if dtype == "uint8":
        np.testing.assert_array_equal(content, rgb)
        return
    scale, offset = affine_normalization(normalization)
    if rgb.dtype == np.uint16:
        scale = scale * np.float32(255.0 / 65535.0)
    expected = (rgb.astype(np.float32) * scale + offset).astype(dtype)
    bits = np.uint16 if dtype == "float16" else np.uint32
    np.testing.assert_array_equal(content.view(bits), expected.view(bits))
    if top:
        pad = (np.float32(114) - np.array(MEAN_STD.mean, np.float32) * 255) / (np.array(MEAN_STD.std, np.float32) * 255)
        np.testing.assert_allclose(hwc[:top].astype(np.float32), np.broadcast_to(pad, hwc[:top].shape), atol=2e-3)


def test_concurrent_preprocessors_share_the_bands_and_both_get_their_own_tensor() -> None:
    """Two cameras' pipelines in two threads: one gets the worker threads, the other runs its bands
    itself; both tensors equal a lone run's."""
    spec = InputSpec(name="input", layout="NHWC", dtype="float32", size=(256, 256), color_order="RGB",
                     resize="fixed_shape", interpolation="linear", sampling="asymmetric",
                     normalization=NormalizationSpec(type="unit"))
    frames = [bgr_frame("astronaut.png", (1080, 1920)), bgr_frame("coffee.png", (1080, 1920))]
    expected = [Preprocessor(spec)(frame, "BGR")[0].copy() for frame in frames]
    shared_row_bands()
    results: dict[int, list[np.ndarray]] = {0: [], 1: []}

    def camera(index: int) -> None:
        preprocessor = Preprocessor(spec)
        for _ in range(20):
            results[index].append(preprocessor(frames[index], "BGR")[0].copy())

    threads = [threading.Thread(target=camera, args=(index,)) for index in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index in (0, 1):
        assert len(results[index]) == 20
        assert all(np.array_equal(tensor, expected[index]) for tensor in results[index])


def test_a_forked_child_makes_its_own_worker_threads() -> None:
    """The parent's worker threads do not exist in a forked child; its bands must not wait for them."""
    import multiprocessing

    shared_row_bands()
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        result = pool.apply_async(_banded_sum_in_child, (1000,))
        assert result.get(timeout=30) == sum(range(1000))


def _banded_sum_in_child(rows: int) -> int:
    total: list[int] = []
    lock = threading.Lock()

    def add(start: int, stop: int) -> None:
        with lock:
            total.append(sum(range(start, stop)))

    with opencv_threads(2):
        shared_row_bands().run(add, rows)
    return sum(total)
