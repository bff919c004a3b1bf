"""visualize: palettes, colouring, overlays and box drawing against hand-computed pixels."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from trt_perception import visualize
from trt_perception.pipeline import Pipeline
from trt_perception.results import Detections, SegmentationResult
from trt_perception.visualize import (
    CITYSCAPES_COLORS,
    as_rgb,
    colorize,
    default_palette,
    draw_detections,
    full_palette,
    make_palette,
    overlay,
    prepare_colouring,
)

IMAGES = Path(__file__).resolve().parent / "fixtures" / "images"


@pytest.fixture(autouse=True)
def opencv_colouring_unless_prepared(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts with the compiled colouring unloaded (OpenCV's passes); tests that want it
    call ``prepare_colouring(2)``, undone after the test."""
    monkeypatch.setattr(visualize, "_binary_colouring", None)


def indexed_colours(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Reference colouring: plain indexing into the palette, extended by ``make_palette`` when labels
    go beyond it."""
    return make_palette(palette.tolist(), max(len(palette), int(labels.max()) + 1))[labels]


def test_default_palette_starts_with_cityscapes_and_stays_distinct():
    palette = default_palette(300)
    assert palette.shape == (300, 3) and palette.dtype == np.uint8
    assert [tuple(c) for c in palette[:19]] == list(CITYSCAPES_COLORS)
    assert len({tuple(c) for c in palette}) == 300, "all colours differ"
    np.testing.assert_array_equal(default_palette(300), palette)  # deterministic
    # beyond Cityscapes, PASCAL VOC's bit interleaving: index 19 = 0b010_011, the low triple
    # (r, g, b) = (1, 1, 0) sets bit 7, the next (0, 1, 0) sets bit 6 -> (128, 192, 0)
    assert tuple(int(v) for v in palette[19]) == (128, 192, 0)


def test_make_palette_puts_spec_colours_first():
    palette = make_palette([[1, 2, 3], [4, 5, 6]], 4)
    assert [tuple(c) for c in palette] == [(1, 2, 3), (4, 5, 6), CITYSCAPES_COLORS[2], CITYSCAPES_COLORS[3]]


def test_colorize_and_overlay():
    labels = np.array([[0, 1], [1, 3]], np.uint8)
    palette = np.array([[0, 0, 0], [200, 100, 50]], np.uint8)
    colours = colorize(labels, palette)
    assert colours.tolist() == [[[0, 0, 0], [200, 100, 50]], [[200, 100, 50], list(CITYSCAPES_COLORS[3])]]
    image = np.full((2, 2, 3), 100, np.uint8)
    blended = overlay(image, colours, alpha=0.25)
    expected = np.rint(image * 0.75 + colours * 0.25).astype(np.uint8)
    np.testing.assert_array_equal(blended, expected)
    with pytest.raises(ValueError, match="alpha must be in"):
        overlay(image, colours, alpha=1.5)


def test_full_palette_extends_with_default_colours_to_every_label_value():
    palette = np.array([[1, 2, 3], [4, 5, 6]], np.uint8)
    table = full_palette(palette, np.dtype(np.uint8))
    assert table.shape == (256, 3) and table.dtype == np.uint8
    np.testing.assert_array_equal(table, make_palette(palette.tolist(), 256))
    assert len(full_palette(default_palette(3), np.dtype(np.uint16))) == 65536
    long_palette = default_palette(300)
    np.testing.assert_array_equal(full_palette(long_palette, np.dtype(np.uint8)), long_palette[:256])


@pytest.mark.parametrize("palette_size", [1, 2, 19, 256, 300])
def test_colorize_uint8_equals_palette_indexing_on_random_labels(palette_size: int):
    rng = np.random.default_rng(palette_size)
    palette = rng.integers(0, 256, (palette_size, 3), dtype=np.uint8)
    labels = rng.integers(0, 256, (61, 83), dtype=np.uint8)  # mostly beyond the shorter palettes
    np.testing.assert_array_equal(colorize(labels, palette), indexed_colours(labels, palette))
    strided = labels[::2, 1::3]
    np.testing.assert_array_equal(colorize(strided, palette), indexed_colours(strided, palette))


def binary_labels(height: int, width: int, seed: int) -> np.ndarray:
    """0/1 labels whose rows run from all 0 through mixed to all 1 (uniform groups of eight and mixed ones)."""
    rng = np.random.default_rng(seed)
    share_of_ones = np.linspace(0, 1, height)[:, None]
    return (rng.random((height, width)) < share_of_ones).astype(np.uint8)


def compiled_colouring(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled pass loaded, and OpenCV's passes made to fail, so that only the compiled pass can colour."""
    prepare_colouring(2)
    assert visualize.colour_kernels() is not None, "numba is a dependency of the package and of CI"

    def fail(*_: object) -> None:
        raise AssertionError("the OpenCV passes coloured a mask the compiled pass takes")

    monkeypatch.setattr(visualize, "_colorize_binary", fail)


@pytest.mark.parametrize("background", [(0, 0, 0), (10, 20, 30)])
@pytest.mark.parametrize("height, width", [(5, 8), (40, 24), (480, 640), (1080, 1920)])
def test_binary_labels_coloured_in_one_compiled_pass_equal_palette_indexing(
    height: int, width: int, background: tuple[int, int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # 1080p's 6 MB colour image is coloured in row bands
    palette = np.array([background, (255, 64, 160)], np.uint8)
    labels = binary_labels(height, width, width)
    compiled_colouring(monkeypatch)
    np.testing.assert_array_equal(colorize(labels, palette), palette[labels])


def test_read_only_labels_take_the_compiled_pass_without_compiling_at_the_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled_colouring(monkeypatch)
    kernel = visualize.colour_kernels().colour_binary_rows  # type: ignore[union-attr]
    compiled_versions = len(kernel.signatures)
    labels = binary_labels(64, 64, 3)
    labels.flags.writeable = False
    palette = np.array([(0, 0, 0), (1, 2, 3)], np.uint8)
    np.testing.assert_array_equal(colorize(labels, palette), palette[labels])
    assert len(kernel.signatures) == compiled_versions


@pytest.mark.parametrize("layout", ["width 13", "width 641", "unaligned rows", "strided"])
def test_binary_labels_the_compiled_pass_cannot_take_are_coloured_by_opencv(layout: str) -> None:
    prepare_colouring(2)
    wide = binary_labels(30, 1281, 5)
    labels = {
        "width 13": np.ascontiguousarray(wide[:, :13]),
        "width 641": np.ascontiguousarray(wide[:, :641]),
        "unaligned rows": np.frombuffer(np.ascontiguousarray(wide[:, :641]).tobytes(), np.uint8, 30 * 640, 1).reshape(30, 640),
        "strided": wide[:, :1280:2],
    }[layout]
    palette = np.array([(7, 7, 7), (200, 0, 9)], np.uint8)
    np.testing.assert_array_equal(colorize(labels, palette), palette[labels])


def test_colorize_uint8_equals_palette_indexing_on_real_label_maps():
    result = Pipeline.from_spec("selfie_segmentation", intra_op_threads=1).run(
        cv2.imread(str(IMAGES / "astronaut.png")), "BGR"
    )
    assert isinstance(result, SegmentationResult)
    person = result.labels
    assert person.dtype == np.uint8 and set(np.unique(person)) == {0, 1}
    for palette in (make_palette(None, 2), np.array([[9, 8, 7]], np.uint8)):  # the second: label 1 beyond it
        np.testing.assert_array_equal(colorize(person, palette), indexed_colours(person, palette))
    # a map with every label value in real image structure: the quokka photo's grey levels
    grey = cv2.imread(str(IMAGES / "quokka.jpg"), cv2.IMREAD_GRAYSCALE)
    assert grey is not None and len(np.unique(grey)) > 200
    palette = default_palette(19)
    np.testing.assert_array_equal(colorize(grey, palette), indexed_colours(grey, palette))


def test_colorize_follows_palette_changes_and_keeps_uint16_labels():
    labels = np.array([[0, 1], [2, 1]], np.uint8)
    palette = np.array([[10, 20, 30], [40, 50, 60]], np.uint8)
    first = colorize(labels, palette)
    palette[1] = (7, 7, 7)  # same array object, new colours: the cached lookup table must not be stale
    second = colorize(labels, palette)
    assert first[0, 1].tolist() == [40, 50, 60] and second[0, 1].tolist() == [7, 7, 7]
    wide = np.array([[0, 300], [70000 % 65536, 1]], np.uint16)
    np.testing.assert_array_equal(colorize(wide, palette), indexed_colours(wide, palette))


def test_overlay_resizes_network_size_colours_to_the_image():
    image = np.zeros((4, 6, 3), np.uint8)
    colours = np.array([[[255, 0, 0], [0, 255, 0]]], np.uint8)  # 1x2: left red, right green
    blended = overlay(image, colours, alpha=1.0)
    assert blended.shape == (4, 6, 3)
    assert np.all(blended[:, :3] == [255, 0, 0]) and np.all(blended[:, 3:] == [0, 255, 0])


def test_as_rgb_converts_channel_orders_and_copies():
    bgra = np.zeros((2, 2, 4), np.uint8)
    bgra[..., 0], bgra[..., 2] = 10, 30
    assert as_rgb(bgra, "BGRA")[0, 0].tolist() == [30, 0, 10]
    rgb = np.ones((2, 2, 3), np.uint8)
    converted = as_rgb(rgb, "RGB")
    assert converted is not rgb and np.array_equal(converted, rgb)
    mono16 = np.full((2, 2, 1), 0xABCD, np.uint16)
    assert as_rgb(mono16, "MONO")[0, 0].tolist() == [0xAB, 0xAB, 0xAB]


def test_draw_detections_draws_each_box_in_its_class_colour_without_touching_the_input():
    image = np.zeros((100, 120, 3), np.uint8)
    detections = Detections(np.array([[20, 40, 80, 90]]), np.array([0.9]), np.array([1]))
    drawn = draw_detections(image, detections, ("cat", "dog"), np.array([[0, 0, 255], [0, 255, 0]], np.uint8))
    assert not image.any(), "the input image is not modified"
    assert drawn[65, 20].tolist() == [0, 255, 0], "left edge in the class colour (green for dog)"
    assert drawn[65, 80].tolist() == [0, 255, 0], "right edge"
    assert drawn[90, 50].tolist() == [0, 255, 0], "bottom edge"
    assert not drawn[60:80, 30:70].any(), "inside the box stays untouched"
    assert drawn[25:40, 20:60].any(), "the label sits above the box"


@pytest.mark.parametrize("palette_size", [1, 2, 19])
def test_colorize_binary_labels_equal_palette_indexing(palette_size: int):
    """0/1 label maps take the bitwise path: the same colours as indexing, for black and coloured
    backgrounds, a palette too short for label 1, strided views, maps of one label only and 1080p
    maps (coloured in row bands on several cores)."""
    rng = np.random.default_rng(100 + palette_size)
    labels = (cv2.GaussianBlur(rng.random((270, 480)), (0, 0), 9) > 0.5).astype(np.uint8)
    assert 0 < labels.sum() < labels.size
    full_hd = cv2.resize(labels, (1920, 1080), interpolation=cv2.INTER_NEAREST)
    coloured = rng.integers(0, 256, (palette_size, 3), dtype=np.uint8)
    black_background = coloured.copy()
    black_background[0] = 0
    for palette in (coloured, black_background):
        for case in (labels, labels[1::3, ::2], np.zeros((5, 7), np.uint8), np.ones((3, 4), np.uint8),
                     full_hd, full_hd[3:, 1:]):
            np.testing.assert_array_equal(colorize(case, palette), indexed_colours(case, palette))
