"""Upsampled score maps reduced to labels, against OpenCV's own bilinear resize (IPP off) followed by
numpy's comparison or argmax, bit for bit: with the compiled blend (numba) and with the full resize."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from trt_perception.decoders import upsampling
from trt_perception.decoders.upsampling import argmax_resized, threshold_resized

from test_decoders_segmentation import opencv_without_ipp

REFERENCES = Path(__file__).resolve().parent / "fixtures" / "references"
NUMBA_INSTALLED = importlib.util.find_spec("numba") is not None
PATHS = ["compiled", "full_resize"]


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Runs a test once through numba's blend (skipped where numba is missing) and once through the
    full resize."""
    if request.param == "compiled":
        if not NUMBA_INSTALLED:
            pytest.skip("numba is not installed")
        if platform.machine() not in ("x86_64", "AMD64"):
            pytest.skip("OpenCV's own resize fuses multiply-adds off x86; the blend (like the GPU) does not")
        assert upsampling.compiled_kernels() is not None
    else:
        monkeypatch.setattr(upsampling, "compiled_kernels", lambda: None)
    yield request.param


def opencv_resize(scores: npt.NDArray[np.float32], size: tuple[int, int]) -> npt.NDArray[np.float32]:
    with opencv_without_ipp():
        return cv2.resize(np.ascontiguousarray(scores), (size[1], size[0]), interpolation=cv2.INTER_LINEAR).reshape(
            size + scores.shape[2:]
        )


def test_numba_blend_is_in_use_where_numba_is_installed() -> None:
    """requirements.txt installs numba, so CI runs the compiled path; a broken numba would silently
    fall back to the slower full resize otherwise."""
    if not NUMBA_INSTALLED:
        pytest.skip("numba is not installed")
    kernels = upsampling.compiled_kernels()
    assert kernels is not None and hasattr(kernels, "threshold_rows")


SIZES = [
    ((256, 256), (1080, 1920)),  # the selfie model on a 1080p camera
    ((256, 256), (720, 1280)),
    ((65, 65), (480, 640)),
    ((37, 53), (1000, 13)),  # taller, narrower
    ((512, 512), (256, 256)),  # exactly half in both directions (OpenCV's area shortcut)
    ((300, 200), (123, 457)),
    ((64, 64), (64, 200)),  # only the width changes
    ((64, 64), (300, 64)),  # only the height changes
    ((1, 1), (5, 7)),
    ((9, 9), (9, 9)),
]


@pytest.mark.parametrize(("source", "size"), SIZES)
def test_threshold_of_resized_standard_normal_scores_equals_opencv(path: str, source, size) -> None:
    """Standard-normal scores cut at 0: any other rounding of the blend moves labels (Intel IPP's
    resize changes nearly every value of such a map)."""
    scores = np.random.default_rng(sum(source) * 7 + sum(size)).standard_normal(source).astype(np.float32)
    labels = threshold_resized(scores, size, 0.0)
    expected = opencv_resize(scores, size) > 0
    assert labels.dtype == np.uint8 and labels.shape == size and labels.flags.c_contiguous
    np.testing.assert_array_equal(labels, expected.astype(np.uint8))


def test_the_cut_is_compared_in_float32_like_numpy(path: str) -> None:
    """0.3 is no float32: numpy compares a float32 map with float32(0.3); so must the blend."""
    scores = np.full((4, 4), np.float32(0.3), np.float32)
    resized = opencv_resize(scores, (8, 8))
    expected = (resized > 0.3).astype(np.uint8)
    assert not np.array_equal(expected, resized.astype(np.float64) > 0.3)  # float64 would differ
    np.testing.assert_array_equal(threshold_resized(scores, (8, 8), 0.3), expected)


@pytest.mark.parametrize(
    ("source", "size", "probes"),
    [((256, 256), (1080, 1920), 300),  # the selfie model on a 1080p camera
     ((64, 2), (32, 1), 32), ((128, 96), (64, 48), 200)],  # exactly half: OpenCV's INTER_AREA shortcut
)
def test_labels_sit_on_the_exact_bits_of_opencvs_resize(path: str, source, size, probes: int) -> None:
    """At sampled pixels, a cut equal to OpenCV's value there gives label 0 and a cut one float32
    step below it gives label 1: the labels follow OpenCV's value to the bit, not merely on the same
    side of one cut (a map exactly twice the output's size takes OpenCV's area shortcut, which
    rounds unlike a bilinear blend)."""
    rng = np.random.default_rng(5)
    scores = rng.standard_normal(source).astype(np.float32)
    reference = opencv_resize(scores, size)
    for flat in rng.choice(reference.size, probes, replace=False):
        y, x = divmod(int(flat), size[1])
        value = reference[y, x]
        assert threshold_resized(scores, size, float(value))[y, x] == 0
        below = np.nextafter(value, np.float32(-np.inf))
        assert threshold_resized(scores, size, float(below))[y, x] == 1


def test_argmax_of_near_ties_halved_follows_opencvs_area_shortcut(path: str) -> None:
    """Channel 1 holds each 2x2 block of channel 0 turned by 180 degrees: a bilinear halving gives
    both channels the same value in exact arithmetic, so the labels are decided by rounding alone;
    OpenCV halves by its area shortcut, and the labels must be its (a blend flipped 235 of 1024)."""
    scores = np.empty((64, 64, 2), np.float32)
    scores[:, :, 0] = np.random.default_rng(4).standard_normal((64, 64))
    scores[:, :, 1] = scores[:, :, 0].reshape(32, 2, 32, 2)[:, ::-1, :, ::-1].reshape(64, 64)
    expected = np.argmax(opencv_resize(scores, (32, 32)), axis=2)
    assert 0.2 < expected.mean() < 0.8  # rounding decides both ways
    np.testing.assert_array_equal(argmax_resized(scores, (32, 32), np.uint8), expected)


def smooth_map(
    source: tuple[int, int], centre: tuple[float, float] = (1 / 2, 1 / 3), radius: float = 1 / 4, softness: float = 6.0
) -> npt.NDArray[np.float32]:
    """A probability map with a round foreground and large uniform areas, like a selfie model's: a
    disc around ``centre`` (fractions of the rows and columns) of ``radius`` (a fraction of the rows)
    whose edge falls off over about ``softness`` pixels."""
    rows, columns = np.mgrid[: source[0], : source[1]]
    distance = np.hypot(rows - source[0] * centre[0], columns - source[1] * centre[1])
    return (1 / (1 + np.exp((distance - source[0] * radius) / softness))).astype(np.float32)


def compiled_kernels_on_x86() -> ModuleType:
    """The compiled loops; the test is skipped without numba or off x86 (where OpenCV's own resize
    fuses multiply-adds)."""
    kernels = upsampling.compiled_kernels()
    if kernels is None or platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("needs numba on x86")
    return kernels


def fail_on_full_blend(patch: pytest.MonkeyPatch, kernels: ModuleType) -> None:
    """Make the full blend, to which the cell loop hands rows it cannot fill, fail under ``patch``."""

    def no_full_blend(*_: object) -> None:
        raise AssertionError("a row was handed to the full blend")

    patch.setattr(kernels, "threshold_rows", no_full_blend)


def test_smooth_maps_are_cut_cell_by_cell_to_opencvs_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled path fills the runs of output pixels whose four source scores all lie well on
    one side of the cut, and blends the others: OpenCV's labels, at 0.5 with no row left to the
    full blend (made to fail there), and at cuts on OpenCV's exact values and one float32 step below
    (where flat areas beside such a cut may hand rows to the full blend)."""
    kernels = compiled_kernels_on_x86()
    rng = np.random.default_rng(12)
    for source, size in [((256, 256), (1080, 1920)), ((256, 256), (480, 640)), ((64, 48), (480, 640)), ((100, 7), (1000, 3))]:
        scores = smooth_map(source)
        reference = opencv_resize(scores, size)
        with monkeypatch.context() as patch:
            fail_on_full_blend(patch, kernels)
            labels = threshold_resized(scores, size, 0.5)
        assert 0.05 < labels.mean() < 0.95
        np.testing.assert_array_equal(labels, (reference > np.float32(0.5)).astype(np.uint8))
        for flat in rng.choice(reference.size, 20, replace=False):
            y, x = divmod(int(flat), size[1])
            value = reference[y, x]
            assert threshold_resized(scores, size, float(value))[y, x] == 0
            assert threshold_resized(scores, size, float(np.nextafter(value, np.float32(-np.inf))))[y, x] == 1


def test_a_same_size_map_is_cut_as_it_is(path: str) -> None:
    """A map already at the output size (which OpenCV's resize copies) is compared as it is: an
    infinite score does not turn its neighbours' blend by weight 0 into NaN."""
    scores = np.ones((3, 4), np.float32)
    scores[0, 1] = np.inf
    np.testing.assert_array_equal(threshold_resized(scores, (3, 4), 0.0), np.ones((3, 4), np.uint8))
    np.testing.assert_array_equal(threshold_resized(scores, (3, 4), 1.0), (scores > 1.0).astype(np.uint8))


def test_random_maps_cut_cell_by_cell_equal_opencv(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cell loop alone (no row handed to the full blend, which is made to fail) on random maps,
    sizes and cuts: noise, smooth blobs and maps of three levels (long stretches of equal scores,
    cuts on them), more output rows than the map's, outputs wider and narrower than the map:
    OpenCV's labels every time."""
    fail_on_full_blend(monkeypatch, compiled_kernels_on_x86())
    monkeypatch.setattr(upsampling, "CELLS_MAX_BLENDED_SHARE", 2.0)
    rng = np.random.default_rng(5)
    for trial in range(600):
        source = (int(rng.integers(1, 40)), int(rng.integers(1, 70)))
        size = (int(rng.integers(source[0] + 1, 3 * source[0] + 2)), int(rng.integers(1, 150)))
        if trial % 3 == 0:
            scores = rng.standard_normal(source).astype(np.float32)
        elif trial % 3 == 1:
            scores = smooth_map(source, (rng.random(), rng.random()), 1 / 3, rng.uniform(0.3, 4))
        else:
            scores = rng.integers(0, 3, source).astype(np.float32) * np.float32(0.5)
        cut = float(rng.choice([0.5, 0.0, float(scores.flat[rng.integers(scores.size)])]))
        expected = (opencv_resize(scores, size) > np.float32(cut)).astype(np.uint8)
        np.testing.assert_array_equal(threshold_resized(scores, size, cut), expected, err_msg=f"{source} -> {size}, cut {cut}")


def test_cells_within_rounding_of_the_cut_are_blended(path: str) -> None:
    """Scores a few float32 steps around 7: at some pixels all four source scores lie above the cut
    and OpenCV's blend still rounds to it or below (label 0), so a cell is filled only when its
    scores clear the cut by more than the blend's rounding can move them."""
    rng = np.random.default_rng(21)
    scores = (np.float32(7.0) + rng.integers(-3, 4, (64, 64)).astype(np.float32) * np.spacing(np.float32(7.0))).astype(np.float32)
    size = (362, 195)
    reference = opencv_resize(scores, size)
    # the four source scores around each output pixel (half-pixel centres), by hand
    rows = np.clip(np.floor((np.arange(size[0]) + 0.5) * 64 / size[0] - 0.5), 0, 62).astype(int)
    columns = np.clip(np.floor((np.arange(size[1]) + 0.5) * 64 / size[1] - 0.5), 0, 62).astype(int)
    corners = [scores[rows + dy][:, columns + dx] for dy in (0, 1) for dx in (0, 1)]
    rounded_below = 0
    for cut in np.unique(reference):
        labels = threshold_resized(scores, size, float(cut))
        np.testing.assert_array_equal(labels, (reference > cut).astype(np.uint8))
        rounded_below += np.count_nonzero(np.logical_and.reduce([corner > cut for corner in corners]) & (reference <= cut))
    assert rounded_below > 0  # the map has such pixels: a fill by the corners alone would fail here


def test_threshold_of_mediapipes_selfie_map_equals_its_upsample(path: str) -> None:
    """MediaPipe's own 256x256 selfie probabilities and its 768x768 upsample (recorded from
    mediapipe 0.10.14 by scripts/record_references.py): the labels at 0.5 are the labels of
    MediaPipe's upsampled map, on every recorded row."""
    recorded = np.load(REFERENCES / "selfie_mediapipe" / "upsampling_person_768.npz")
    scores, rows, expected = recorded["scores"], recorded["rows"], recorded["upsampled_rows"]
    labels = threshold_resized(scores, (768, 768), 0.5)
    assert 0.01 < labels.mean() < 0.99  # the person covers about 5 %
    np.testing.assert_array_equal(labels[rows], (expected > 0.5).astype(np.uint8))


@pytest.mark.parametrize("channels", [2, 3, 4, 21, 130])
@pytest.mark.parametrize(("source", "size"), [((65, 65), (480, 640)), ((37, 53), (300, 41)), ((512, 512), (256, 256))])
def test_argmax_of_resized_scores_equals_opencv_then_numpy(path: str, channels: int, source, size) -> None:
    """Class scores of 2 to 130 channels (beyond OpenCV's 128 per call), up- and downsampled."""
    scores = np.random.default_rng(channels + sum(size)).standard_normal(source + (channels,)).astype(np.float32)
    dtype = np.uint8 if channels <= 256 else np.uint16
    labels = argmax_resized(scores, size, dtype)
    if channels <= 128:
        expected = np.argmax(opencv_resize(scores, size), axis=2)
    else:
        expected = np.argmax(np.concatenate([opencv_resize(scores[:, :, :128], size),
                                             opencv_resize(scores[:, :, 128:], size)], axis=2), axis=2)
    assert labels.dtype == dtype and labels.shape == size
    np.testing.assert_array_equal(labels, expected)
    assert len(np.unique(labels)) == channels


def test_argmax_ties_go_to_the_first_channel_and_uint16_labels_pass_255(path: str) -> None:
    """Channels 0 and 2 equal everywhere and above channel 1: label 0, never 2 (numpy's argmax);
    300 channels whose winner is past 255 need uint16 labels."""
    base = np.random.default_rng(3).uniform(1, 2, (6, 5)).astype(np.float32)
    scores = np.stack([base, base - 1, base], axis=2)
    np.testing.assert_array_equal(argmax_resized(scores, (17, 11), np.uint8), np.zeros((17, 11), np.uint8))
    many = np.zeros((4, 4, 300), np.float32)
    many[:, :, 299] = 1.0
    labels = argmax_resized(many, (9, 9), np.uint16)
    assert labels.dtype == np.uint16
    np.testing.assert_array_equal(labels, np.full((9, 9), 299))
    many[:, :, 0] = many[:, :, 128] = 2.0  # a tie across OpenCV's 128-channel groups: the first wins
    np.testing.assert_array_equal(argmax_resized(many, (9, 9), np.uint16), np.zeros((9, 9)))


def test_a_cropped_window_is_resized_like_its_copy(path: str) -> None:
    """The decoders pass the image's part of a letterboxed map as a view: same labels as a copy."""
    scores = np.random.default_rng(9).standard_normal((128, 128, 3)).astype(np.float32)
    window = scores[28:100, :]
    assert not scores[28:100, 5:90, 1].flags.c_contiguous
    np.testing.assert_array_equal(argmax_resized(window, (1080, 1920), np.uint8),
                                  np.argmax(opencv_resize(window.copy(), (1080, 1920)), axis=2))
    np.testing.assert_array_equal(threshold_resized(scores[28:100, 5:90, 1], (300, 400), 0.25),
                                  (opencv_resize(scores[28:100, 5:90, 1].copy(), (300, 400)) > np.float32(0.25)).astype(np.uint8))


PREPARED_THEN_DECODED = """
import json, numpy as np
from trt_perception.decoders import create_decoder
from trt_perception.decoders import upsampling_kernels as kernels
from trt_perception.geometry import ResizeGeometry
binary = create_decoder("segmentation", {"type": "binary", "upsample": "before_threshold"}, 2)
logits = create_decoder("segmentation", {"type": "logits", "upsample": "before_argmax"}, 19)
compiled = lambda: [len(kernel.signatures) for kernel in (kernels.threshold_rows, kernels.threshold_rows_by_cells, kernels.argmax_rows)]
prepared = compiled()
scores = np.random.default_rng(0).standard_normal((1, 19, 64, 64)).astype(np.float32)
geometry = ResizeGeometry.stretch((480, 640), (64, 64))
binary.decode({"mask": scores[:, :1]}, geometry, True)
logits.decode({"logits": scores}, geometry, True)
scores.setflags(write=False)  # outputs a backend hands over read-only, and a width that stays
for size in [(480, 640), (480, 64)]:
    binary.decode({"mask": scores[:, :1]}, ResizeGeometry.stretch(size, (64, 64)), True)
    logits.decode({"logits": scores}, ResizeGeometry.stretch(size, (64, 64)), True)
print(json.dumps([prepared, compiled()]))
"""


def test_decoders_compile_the_blend_when_built_not_at_the_first_frame(tmp_path: Path) -> None:
    """A fresh process (its own numba cache): building the before_threshold and before_argmax
    decoders compiles exactly the loops their first frame then uses (no new compilation then)."""
    if not NUMBA_INSTALLED:
        pytest.skip("numba is not installed")
    result = subprocess.run([sys.executable, "-c", PREPARED_THEN_DECODED], capture_output=True, text=True,
                            env={**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}, timeout=120)
    assert result.returncode == 0, result.stderr
    prepared, after_decoding = json.loads(result.stdout.strip().splitlines()[-1])
    assert prepared == [1, 1, 1]
    assert after_decoding == prepared


def test_without_numba_the_full_resize_runs_and_the_log_says_why(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """numba made unimportable (as a numpy newer than it supports does): one warning naming the
    reason, and the labels still OpenCV's."""
    monkeypatch.setitem(sys.modules, "numba", None)
    monkeypatch.delitem(sys.modules, "trt_perception.decoders.upsampling_kernels", raising=False)
    upsampling.compiled_kernels.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="trt_perception.decoders.upsampling"):
            assert upsampling.compiled_kernels() is None
            scores = np.random.default_rng(4).standard_normal((32, 32)).astype(np.float32)
            labels = threshold_resized(scores, (300, 200), 0.0)
        np.testing.assert_array_equal(labels, (opencv_resize(scores, (300, 200)) > 0).astype(np.uint8))
        warnings = [record.getMessage() for record in caplog.records]
        assert len(warnings) == 1 and "numba cannot be imported" in warnings[0] and "numba" in warnings[0]
    finally:
        upsampling.compiled_kernels.cache_clear()


def test_threads_blending_at_once_keep_their_own_scratch(path: str) -> None:
    """Four threads upsampling different maps at the same time (each horizontal pass goes to its
    thread's reused scratch memory): every thread gets its own map's labels, call after call."""
    rng = np.random.default_rng(11)
    maps = [rng.standard_normal((64 + 16 * index, 80)).astype(np.float32) for index in range(4)]
    size = (700, 900)
    expected = [(opencv_resize(scores, size) > 0).astype(np.uint8) for scores in maps]
    failures: list[int] = []

    def work(index: int) -> None:
        for _ in range(20):
            if not np.array_equal(threshold_resized(maps[index], size, 0.0), expected[index]):
                failures.append(index)

    threads = [threading.Thread(target=work, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


NO_CACHE_PLACE = """
import json, numpy as np, cv2
from trt_perception.decoders import create_decoder, upsampling
from trt_perception.geometry import ResizeGeometry
decoder = create_decoder("segmentation", {"type": "binary", "upsample": "before_threshold"}, 2)
scores = np.random.default_rng(6).standard_normal((1, 40, 40, 1)).astype(np.float32)
labels = decoder.decode({"mask": scores}, ResizeGeometry.stretch((300, 200), (40, 40)), True)
cv2.ipp.setUseIPP(False)
expected = cv2.resize(scores[0, :, :, 0], (200, 300), interpolation=cv2.INTER_LINEAR) > 0.5
print(json.dumps([upsampling.compiled_kernels() is not None, bool(np.array_equal(labels, expected))]))
"""


def test_a_read_only_install_without_a_writable_home_still_compiles(tmp_path: Path) -> None:
    """The package where numba can cache nothing (its folder's __pycache__ unusable, no writable
    home or cache folder; as a service user running a root-owned install): the decoder is built
    and the compiled blend runs, uncached, with OpenCV's labels."""
    if not NUMBA_INSTALLED:
        pytest.skip("numba is not installed")
    package = Path(upsampling.__file__).resolve().parents[1]
    copy = tmp_path / "site" / "trt_perception"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "decoders" / "__pycache__").write_text("not a folder")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    environment = {key: value for key, value in os.environ.items() if key != "NUMBA_CACHE_DIR"}
    environment.update(PYTHONPATH=str(copy.parent), HOME=str(blocker / "home"), XDG_CACHE_HOME=str(blocker / "cache"),
                       PYTHONDONTWRITEBYTECODE="1")
    result = subprocess.run([sys.executable, "-c", NO_CACHE_PLACE], capture_output=True, text=True, env=environment,
                            cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [True, True]
