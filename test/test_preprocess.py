"""Preprocessor: every normalization, colour order, layout and dtype against hand-computed values."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from trt_perception.errors import ImageDecodeError
from trt_perception.preprocess import (
    Preprocessor,
    affine_normalization,
    cpu_only_input_options,
    dynamic_network_size,
)
from trt_perception.spec import DynamicSize, InputSpec, NormalizationSpec, PostAffine, load_model_spec

RNG = np.random.default_rng(7)
IMAGES = Path(__file__).resolve().parent / "fixtures" / "images"


def make(size=(2, 2), **options) -> Preprocessor:
    options.setdefault("layout", "NHWC")
    return Preprocessor(InputSpec(size=size, **options))


def norm(kind: str, **options) -> NormalizationSpec:
    return NormalizationSpec(kind, **options)


# --------------------------------------------------------------------------- normalizations

# tf.image.per_image_standardization's documented example (TensorFlow API docs): a 2x2x3 image
# holding 1..12 standardizes to these values.
TF_EXAMPLE_INPUT = np.arange(1, 13, dtype=np.uint8).reshape(2, 2, 3)
TF_EXAMPLE_OUTPUT = np.array(
    [
        [[-1.593255, -1.3035723, -1.0138896], [-0.7242068, -0.4345241, -0.14484136]],
        [[0.14484136, 0.4345241, 0.7242068], [1.0138896, 1.3035723, 1.593255]],
    ],
    np.float32,
)


def test_per_image_standardization_matches_tensorflows_documented_example():
    tensor, _ = make(normalization=norm("per_image_standardization"))(TF_EXAMPLE_INPUT, "RGB")
    np.testing.assert_allclose(tensor[0], TF_EXAMPLE_OUTPUT, atol=2e-6)


def test_per_image_standardization_uses_minimum_std_for_flat_images():
    image = np.full((2, 2, 3), 10, np.uint8)
    image[0, 0, 0] = 11  # std = 0.276 < 1/sqrt(12) = 0.2887, so the minimum applies
    values = image.astype(np.float64)
    assert values.std() < 1 / np.sqrt(12)
    expected = (values - values.mean()) * np.sqrt(12)
    tensor, _ = make(normalization=norm("per_image_standardization"))(image, "RGB")
    np.testing.assert_allclose(tensor[0], expected, atol=1e-5)


PIXELS = np.array([[[0, 128, 255], [17, 34, 51]], [[200, 100, 50], [1, 2, 3]]], np.uint8)  # RGB


@pytest.mark.parametrize(
    ("normalization", "expected"),
    [
        (norm("none"), PIXELS.astype(np.float64)),
        (norm("unit"), PIXELS / 255.0),
        (norm("symmetric"), PIXELS / 127.5 - 1.0),
        (
            norm("mean_std", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), range="unit"),
            (PIXELS / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225],
        ),
        (
            norm("mean_std", mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375), range="byte"),
            (PIXELS - [123.675, 116.28, 103.53]) / [58.395, 57.12, 57.375],
        ),
    ],
    ids=["none", "unit", "symmetric", "mean_std_unit", "mean_std_byte"],
)
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_affine_normalizations(normalization, expected, layout):
    tensor, geometry = make(layout=layout, normalization=normalization)(PIXELS, "RGB")
    assert tensor.dtype == np.float32 and geometry.content_size == geometry.source_size == (2, 2)
    got = tensor[0] if layout == "NHWC" else tensor[0].transpose(1, 2, 0)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_mean_std_applies_per_model_channel_after_colour_conversion():
    # mean/std are given in the model's colour order (BGR here): the first value belongs to blue.
    spec = norm("mean_std", mean=(10.0, 20.0, 30.0), std=(1.0, 2.0, 4.0), range="byte")
    tensor, _ = make(color_order="BGR", normalization=spec)(PIXELS, "RGB")
    expected = (PIXELS[..., ::-1] - np.array([10.0, 20.0, 30.0])) / [1.0, 2.0, 4.0]
    np.testing.assert_allclose(tensor[0], expected, rtol=1e-6)


def test_sixteen_bit_images_are_scaled_to_the_eight_bit_range():
    image = np.array([[[0, 65535, 32768]]], np.uint16)
    tensor, _ = make(size=(1, 1), normalization=norm("unit"))(image, "RGB")
    np.testing.assert_allclose(tensor[0, 0, 0], [0.0, 1.0, 32768 / 65535], rtol=1e-6)


# --------------------------------------------------------------------------- colour, layout, dtype

CHANNEL_IMAGES = {
    "RGB": lambda r, g, b, a: np.dstack([r, g, b]),
    "BGR": lambda r, g, b, a: np.dstack([b, g, r]),
    "RGBA": lambda r, g, b, a: np.dstack([r, g, b, a]),
    "BGRA": lambda r, g, b, a: np.dstack([b, g, r, a]),
}


@pytest.mark.parametrize("source_order", ["RGB", "BGR", "RGBA", "BGRA", "MONO"])
@pytest.mark.parametrize("model_order", ["RGB", "BGR"])
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_colour_orders_reach_the_model_order(source_order, model_order, layout):
    r, g, b, a = (RNG.integers(0, 256, (3, 5), dtype=np.uint8) for _ in range(4))
    if source_order == "MONO":
        image, planes = r, {"R": r, "G": r, "B": r}
    else:
        image, planes = CHANNEL_IMAGES[source_order](r, g, b, a), {"R": r, "G": g, "B": b}
    tensor, _ = make(size=(3, 5), layout=layout, color_order=model_order, normalization=norm("none"))(image, source_order)
    for index, channel in enumerate(model_order):
        got = tensor[0, :, :, index] if layout == "NHWC" else tensor[0, index]
        np.testing.assert_array_equal(got, planes[channel], err_msg=f"model channel {index} ({channel})")


def test_uint8_and_float16_inputs():
    image = RNG.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    raw, _ = make(size=(4, 6), layout="NCHW", dtype="uint8", normalization=norm("none"))(image, "RGB")
    assert raw.dtype == np.uint8
    np.testing.assert_array_equal(raw[0], image.transpose(2, 0, 1))
    half, _ = make(size=(4, 6), dtype="float16", normalization=norm("symmetric"))(image, "RGB")
    assert half.dtype == np.float16
    np.testing.assert_allclose(half[0].astype(np.float64), image / 127.5 - 1, atol=1e-3)


BIT_EXACT_NORMALIZATIONS = {
    "unit": norm("unit"),
    "symmetric": norm("symmetric"),
    "mean_std_unit": norm("mean_std", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), range="unit"),
    "mean_std_byte_uniform": norm("mean_std", mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0), range="byte"),
}


@pytest.mark.parametrize("normalization", list(BIT_EXACT_NORMALIZATIONS), ids=str)
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("resize", ["fixed_shape", "keep_aspect_ratio"])
def test_normalized_tensor_has_the_bits_of_the_direct_float32_formula_on_real_images(normalization, dtype, layout, resize):
    """Content window == ``float32(pixel) * scale + offset`` (float32 multiply, then add, rounded once to
    the model dtype), bit for bit, on the real sample images (letterbox top-left: strided windows)."""
    spec = BIT_EXACT_NORMALIZATIONS[normalization]
    preprocessor = make(size=(96, 160), layout=layout, dtype=dtype, normalization=spec, resize=resize,
                        pad_placement="top_left", color_order="RGB")
    scale, offset = affine_normalization(spec)
    for name in ("astronaut.png", "page.png", "quokka.jpg"):
        bgr = cv2.imread(str(IMAGES / name), cv2.IMREAD_COLOR)
        assert bgr is not None, name
        tensor, geometry = preprocessor(bgr, "BGR")
        height, width = geometry.content_size
        resized = cv2.cvtColor(cv2.resize(bgr, (width, height), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)
        expected = (resized.astype(np.float32) * scale + offset).astype(dtype)
        content = tensor[0, :height, :width] if layout == "NHWC" else tensor[0, :, :height, :width].transpose(1, 2, 0)
        np.testing.assert_array_equal(content.view(np.uint16 if dtype == "float16" else np.uint32),
                                      expected.view(np.uint16 if dtype == "float16" else np.uint32), err_msg=name)


# --------------------------------------------------------------------------- resize

def test_stretch_resizes_with_the_requested_interpolation():
    image = RNG.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    for name, flag in [("nearest", cv2.INTER_NEAREST), ("linear", cv2.INTER_LINEAR), ("area", cv2.INTER_AREA)]:
        tensor, geometry = make(size=(20, 30), interpolation=name, normalization=norm("none"))(image, "RGB")
        assert geometry.content_size == geometry.network_size == (20, 30) and geometry.offset == (0, 0)
        np.testing.assert_array_equal(tensor[0], cv2.resize(image, (30, 20), interpolation=flag))


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("placement", ["centered", "top_left"])
def test_letterbox_places_content_and_normalized_padding(layout, placement):
    image = RNG.integers(0, 256, (50, 100, 3), dtype=np.uint8)  # 2:1 into 64x64 -> 32x64 content
    pre = make(size=(64, 64), layout=layout, resize="keep_aspect_ratio", pad_value=(114, 114, 114),
               pad_placement=placement, normalization=norm("symmetric"))
    tensor, geometry = pre(image, "RGB")
    assert geometry.content_size == (32, 64)
    top = 16 if placement == "centered" else 0
    assert geometry.offset == (top, 0)
    hwc = tensor[0] if layout == "NHWC" else tensor[0].transpose(1, 2, 0)
    expected_content = cv2.resize(image, (64, 32), interpolation=cv2.INTER_LINEAR) / 127.5 - 1
    np.testing.assert_allclose(hwc[top : top + 32], expected_content, atol=1e-6)
    padding = np.ones((64, 64), bool)
    padding[top : top + 32] = False
    np.testing.assert_allclose(hwc[padding], 114 / 127.5 - 1, atol=1e-6)


def test_letterbox_padding_is_refilled_when_the_aspect_ratio_changes():
    pre = make(size=(8, 8), resize="keep_aspect_ratio", pad_value=(0, 0, 0), normalization=norm("none"))
    wide = np.full((4, 8, 3), 200, np.uint8)
    tall = np.full((8, 4, 3), 100, np.uint8)
    first, _ = pre(wide, "RGB")
    second, geometry = pre(tall, "RGB")
    assert second is first, "the buffer is reused for the same network size"
    assert geometry.content_size == (8, 4) and geometry.offset == (0, 2)
    np.testing.assert_array_equal(second[0, :, 2:6], 100)
    np.testing.assert_array_equal(second[0, :, :2], 0)
    np.testing.assert_array_equal(second[0, :, 6:], 0)


@pytest.mark.parametrize(
    ("source", "rule", "keep_aspect", "expected"),
    [
        # short side 191 -> 736: scale 3.853; width 384 * 3.853 = 1479.6 = 46.2 * 32
        ((191, 384), DynamicSize(736, 32), True, (736, 1504)),  # rounded up: room to letterbox
        ((191, 384), DynamicSize(736, 32), False, (736, 1472)),  # nearest multiple when stretching
        # long side capped: scale min(3.853, 1024/384 = 2.667): height 509.3 = 15.9 * 32
        ((191, 384), DynamicSize(736, 32, 1024), False, (512, 1024)),
        ((1080, 1920), DynamicSize(720, 1), False, (720, 1280)),
        ((10, 10), DynamicSize(5, 32), False, (32, 32)),  # never below one multiple
        # RapidOCR's detector rule (limit_type min, 736, nearest multiple of 32, by hand from its
        # resize(): ratio = 736 / short side only when that side is below 736, int() each side, then
        # int(round(side / 32) * 32) with Python's round):
        ((191, 384), DynamicSize(736, 32, rounding="nearest", upscale_only=True), True, (736, 1472)),
        ((764, 1536), DynamicSize(736, 32, rounding="nearest", upscale_only=True), False, (768, 1536)),
        ((800, 1000), DynamicSize(736, 32, rounding="nearest", upscale_only=True), False, (800, 992)),
        ((720, 720), DynamicSize(736, 32, rounding="nearest", upscale_only=True), False, (736, 736)),
        ((750, 720), DynamicSize(700, 32, rounding="nearest", upscale_only=True), False, (736, 704)),  # 22.5 -> 22
        ((100, 300), DynamicSize(736, 32, rounding="up"), False, (736, 2208)),
    ],
)
def test_dynamic_network_size(source, rule, keep_aspect, expected):
    assert dynamic_network_size(source, rule, keep_aspect) == expected


def test_detr_spec_sizes_equal_hugging_faces_detr_image_processor():
    """The bundled DETR spec's input sizes against DetrImageProcessor's own (transformers, recorded by
    scripts/record_detr_reference.py): the processor on camera-sized images, and its size function
    on a sweep of source sizes. 16:9 cameras are where truncating the capped short side differs."""
    reference = json.loads((Path(__file__).parent / "fixtures" / "references" / "detr_transformers_sizes.json").read_text())
    spec = load_model_spec(Path(__file__).resolve().parents[1] / "config" / "models" / "detr_resnet50_coco.yaml")
    assert isinstance(spec.input.size, DynamicSize) and spec.input.resize == "keep_aspect_ratio"
    assert (spec.input.size.short_side, spec.input.size.max_long_side) == (reference["shortest_edge"], reference["longest_edge"])
    rows = reference["processor"] + reference["get_resize_output_image_size"]
    assert len(rows) > 2000 and [720, 1280, 750, 1333] in reference["processor"]
    ours = {tuple(row[:2]): dynamic_network_size(tuple(row[:2]), spec.input.size, True) for row in rows}
    # extremely thin images, where the processor's rounding leaves no rows (it could not resize them): one row here
    degenerate = [row for row in rows if 0 in row[2:]]
    assert 0 < len(degenerate) < 50 and all(min(ours[tuple(row[:2])]) == 1 for row in degenerate)
    assert [row for row in rows if row not in degenerate and list(ours[tuple(row[:2])]) != row[2:]] == []
    truncated = dataclasses.replace(spec.input.size, side_rounding="truncate")
    assert dynamic_network_size((720, 1280), truncated, True) == (749, 1333)  # what the spec gave before


@pytest.mark.parametrize(("case", "file_name", "factor"), [("coffee", "coffee.png", 1), ("motorcycle_left_x3", "motorcycle_left.png", 3)])
def test_detr_spec_resamples_as_hugging_faces_detr_image_processor(case, file_name, factor):
    """The DETR spec's resize against DetrImageProcessor's resized pixels (transformers, recorded by
    scripts/record_detr_reference.py, every 4th row and column): enlarged 2x, and shrunk 1.875x where
    Pillow's bilinear filter widens (OpenCV's INTER_LINEAR, the spec's former `linear`, does not)."""
    reference = np.load(Path(__file__).parent / "fixtures" / "references" / "detr_transformers_pixels.npz")
    spec = load_model_spec(Path(__file__).resolve().parents[1] / "config" / "models" / "detr_resnet50_coco.yaml")
    assert spec.input.interpolation == "pil_bilinear"
    bgr = cv2.imread(str(IMAGES / file_name), cv2.IMREAD_COLOR)
    bgr = np.repeat(np.repeat(bgr, factor, axis=0), factor, axis=1)
    unnormalized = dataclasses.replace(spec.input, normalization=norm("none"))
    tensor, geometry = Preprocessor(unnormalized)(bgr, "BGR")
    resized = tensor[0].transpose(1, 2, 0)  # NCHW -> HWC, RGB
    assert resized.shape == tuple(reference[f"{case}_shape"]) and geometry.content_size == resized.shape[:2]
    np.testing.assert_array_equal(resized[::4, ::4], reference[case])
    opencv_linear = Preprocessor(dataclasses.replace(unnormalized, interpolation="linear"))(bgr, "BGR")[0][0]
    assert not np.array_equal(opencv_linear.transpose(1, 2, 0)[::4, ::4], reference[case])
    with pytest.raises(ImageDecodeError, match="input.interpolation pil_bilinear takes 8-bit images, got uint16"):
        Preprocessor(unnormalized)(bgr.astype(np.uint16) * 257, "BGR")


def test_dynamic_size_letterbox_geometry_and_buffer_shapes():
    pre = Preprocessor(InputSpec(size=DynamicSize(64, 32), layout="NCHW", resize="keep_aspect_ratio",
                                 pad_placement="top_left"))
    tensor, geometry = pre(np.zeros((30, 70, 3), np.uint8), "RGB")
    # scale 64/30: 70 -> 149.3 -> rounded up to 160; content keeps the aspect ratio
    assert tensor.shape == (1, 3, 64, 160) and geometry.network_size == (64, 160)
    assert geometry.content_size == (64, 149) and geometry.offset == (0, 0)
    tensor, geometry = pre(np.zeros((64, 64, 3), np.uint8), "RGB")
    assert tensor.shape == (1, 3, 64, 64) and geometry.content_size == (64, 64)


def test_an_image_whose_network_input_would_pass_16384_pixels_a_side_is_bad_input():
    """PP-OCR's rule (short side to 736, multiples of 32) without max_long_side on an 8-row strip of a real
    photo: scale 736 / 8 = 92, so 640 columns need 58880; the frame is refused by name, not allocated
    (3 x 736 x 58880 float32: 520 MB, a panorama strip's gigabytes). With max_long_side it runs."""
    strip = cv2.imread(str(IMAGES / "person.jpg"), cv2.IMREAD_COLOR)[100:108]
    assert strip.shape[:2] == (8, 640)
    unbounded = Preprocessor(InputSpec(size=DynamicSize(736, 32), layout="NCHW"))
    with pytest.raises(ImageDecodeError, match=r"^a 640x8 image \(width x height\) would need a 58880x736 network "
                                               r"input under input.size, more than 16384 pixels a side"):
        unbounded(strip, "BGR")
    bounded = Preprocessor(InputSpec(size=DynamicSize(736, 32, max_long_side=2000), layout="NCHW"))
    tensor, geometry = bounded(strip, "BGR")
    # scale min(92, 2000 / 640 = 3.125): 8 x 640 -> 25 x 2000 -> nearest multiples of 32, halves to even:
    # 25 / 32 -> 1, 2000 / 32 = 62.5 -> 62: 32 x 1984
    assert geometry.network_size == (32, 1984) and tensor.shape == (1, 3, 32, 1984)


# --------------------------------------------------------------------------- sampling grids

def bilinear_reference(image: np.ndarray, out_size: tuple[int, int], source_of) -> np.ndarray:
    """Float bilinear resampling with the source coordinate ``source_of(x, in_len, out_len)`` per
    axis, clamped at the borders (TF1's resize_bilinear written out)."""
    height, width = image.shape[:2]
    ys = np.clip(source_of(np.arange(out_size[0]), height, out_size[0]), 0, height - 1)
    xs = np.clip(source_of(np.arange(out_size[1]), width, out_size[1]), 0, width - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, height - 1), np.minimum(x0 + 1, width - 1)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    pixels = image.astype(np.float64)
    top = pixels[y0][:, x0] * (1 - fx) + pixels[y0][:, x1] * fx
    bottom = pixels[y1][:, x0] * (1 - fx) + pixels[y1][:, x1] * fx
    return top * (1 - fy) + bottom * fy


SAMPLING_GRIDS = {
    "align_corners": lambda x, n_in, n_out: x * (n_in - 1) / (n_out - 1),
    "asymmetric": lambda x, n_in, n_out: x * n_in / n_out,
    "half_pixel": lambda x, n_in, n_out: (x + 0.5) * n_in / n_out - 0.5,
}


@pytest.mark.parametrize("sampling", list(SAMPLING_GRIDS))
@pytest.mark.parametrize("out_size", [(256, 256), (97, 311)])
def test_sampling_grids_match_their_definition(sampling, out_size):
    """Each sampling grid against float bilinear interpolation at its own source coordinates (OpenCV
    interpolates with 1/32-pixel weights and rounds to 8 bits: within 1.5 grey levels)."""
    image = cv2.imread(str(IMAGES / "dog.jpg"), cv2.IMREAD_COLOR)
    image = cv2.GaussianBlur(image, (0, 0), 2)[:200, :300]  # smooth, so half-pixel shrinking equals point sampling
    tensor, _ = make(size=out_size, interpolation="linear", sampling=sampling, normalization=norm("none"),
                     color_order="BGR")(image, "BGR")
    expected = bilinear_reference(image, out_size, SAMPLING_GRIDS[sampling])
    assert np.abs(tensor[0] - expected).max() <= 1.5
    others = [name for name in SAMPLING_GRIDS if name != sampling]
    for other in others:  # and the grids really differ
        assert np.abs(tensor[0] - bilinear_reference(image, out_size, SAMPLING_GRIDS[other])).max() > 3


def test_asymmetric_sampling_with_an_integer_factor_picks_every_nth_pixel():
    image = RNG.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    tensor, _ = make(size=(32, 32), sampling="asymmetric", normalization=norm("none"), color_order="BGR")(image, "BGR")
    np.testing.assert_array_equal(tensor[0], image[::2, ::3])


def test_sampled_resize_of_an_image_wider_than_opencvs_remap_takes_is_refused_by_name():
    """cv2.remap asserts on sides of 32767 pixels or more (16-bit map coordinates); such a frame is
    bad input with a reason; one pixel less still resizes, as float bilinear sampling does."""
    row = cv2.imread(str(IMAGES / "dog.jpg"), cv2.IMREAD_COLOR)[:4]
    wide = cv2.GaussianBlur(np.tile(row, (1, 32767 // row.shape[1] + 1, 1))[:, :32767], (0, 0), 2)  # smooth, as above
    maps = cv2.convertMaps(np.zeros((2, 2), np.float32), np.zeros((2, 2), np.float32), cv2.CV_16SC2)
    with pytest.raises(cv2.error, match="SHRT_MAX"):
        cv2.remap(wide, *maps, cv2.INTER_LINEAR)
    pre = make(size=(4, 512), sampling="asymmetric", normalization=norm("none"), color_order="BGR")
    with pytest.raises(ImageDecodeError, match="image is 32767x4: .* at most 32766 pixels a side"):
        pre(wide, "BGR")
    tensor, _ = pre(wide[:, :32766], "BGR")
    assert np.abs(tensor[0] - bilinear_reference(wide[:, :32766], (4, 512), SAMPLING_GRIDS["asymmetric"])).max() <= 1.5
    assert make(size=(4, 512), normalization=norm("none"), color_order="BGR")(wide, "BGR")[0].shape == (1, 4, 512, 3)


# --------------------------------------------------------------------------- seed 002's normalise_input

def normalise_input(im_float32: np.ndarray) -> np.ndarray:
    """The normalization of seed 002 (sidewalk DeepLabv3), as its document writes it."""
    mean = np.mean(im_float32, keepdims=True)
    rsd = 1.0 / np.sqrt(np.mean(np.square(im_float32), keepdims=True) - np.square(mean))
    rsd = np.minimum(rsd, 3 * np.prod(im_float32.shape))
    im_float32 = (im_float32 - mean) * rsd
    return np.clip(0.2 * im_float32 + 0.5, 0.0, 1.0).astype(np.float32)


SEED_002_NORMALIZATION = norm(
    "per_image_standardization", statistics_range="unit", reciprocal_std_cap=(3.0, "count"),
    post_affine=PostAffine(scale=0.2, offset=0.5, clip=(0.0, 1.0)),
)


@pytest.mark.parametrize("name", ["motorcycle_left.png", "quokka.jpg"])
def test_standardization_with_post_affine_and_clip_matches_seed_002(name):
    bgr = cv2.imread(str(IMAGES / name), cv2.IMREAD_COLOR)
    pre = make(size=(320, 576), color_order="BGR", interpolation="area", normalization=SEED_002_NORMALIZATION)
    tensor, _ = pre(bgr, "BGR")
    expected = normalise_input(cv2.resize(bgr, (576, 320), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0)
    np.testing.assert_allclose(tensor[0], expected, atol=2e-6)
    assert 0.0 <= tensor.min() and tensor.max() <= 1.0


def test_the_reciprocal_std_cap_applies_to_flat_images():
    flat = np.full((320, 576, 3), 77, np.uint8)
    tensor, _ = make(size=(320, 576), color_order="BGR", normalization=SEED_002_NORMALIZATION)(flat, "BGR")
    np.testing.assert_array_equal(tensor, 0.5)
    # one grey level of difference in one pixel: 1/std below the cap 3N, so the pixel stands out
    flat[0, 0] = 78
    tensor, _ = make(size=(320, 576), color_order="BGR", normalization=SEED_002_NORMALIZATION)(flat, "BGR")
    expected = normalise_input(flat.astype(np.float32) / 255.0)
    np.testing.assert_allclose(tensor[0], expected, atol=1e-4)
    assert tensor[0, 0, 0, 0] == 1.0  # about sqrt(N / 3) = 429 standard deviations: clipped


def test_post_affine_folds_into_fixed_normalizations_and_clips_padding():
    image = np.array([[[0, 128, 255]]], np.uint8)
    pre = make(size=(1, 3), resize="keep_aspect_ratio", pad_value=255, color_order="RGB",
               normalization=norm("symmetric", post_affine=PostAffine(scale=2.0, offset=0.5, clip=(-1.0, 1.0))))
    tensor, geometry = pre(np.repeat(image, 1, axis=0)[:, :1], "RGB")  # a 1x1 image: padded left and right
    assert geometry.content_size == (1, 1)
    np.testing.assert_allclose(tensor[0, 0, 1], [-1.0, 2 * (128 / 127.5 - 1) + 0.5, 1.0], rtol=1e-6)  # clipped
    np.testing.assert_allclose(tensor[0, 0, 0], 1.0)  # padding 255 -> 2.5 -> clipped to 1


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        (InputSpec(size=(8, 8), sampling="asymmetric"), "input.sampling asymmetric"),
        (InputSpec(size=(8, 8), normalization=norm("unit", post_affine=PostAffine(clip=(0.0, 1.0)))),
         "input.normalization.post_affine"),
        (InputSpec(size=(8, 8), normalization=norm("per_image_standardization", statistics_range="unit")),
         "input.normalization range"),
        (InputSpec(size=(8, 8), normalization=norm("per_image_standardization")), None),
        (InputSpec(size=(8, 8), interpolation="area"), "input.interpolation area"),
        (InputSpec(size=(8, 8), interpolation="cubic"), "input.interpolation cubic"),
        (InputSpec(size=(8, 8), interpolation="pil_bilinear"), "input.interpolation pil_bilinear"),
        (InputSpec(size=(8, 8), interpolation="nearest"), None),
        (InputSpec(size=(8, 8)), None),
    ],
)
def test_options_the_gpu_kernel_lacks_are_named(spec, key):
    """The GPU preprocessor serves these through the CPU preprocessor (never a different tensor)."""
    found = cpu_only_input_options(spec)
    assert found == key if key is None else found.startswith(key)


class HostArray(np.ndarray):
    """A numpy array standing in for a CuPy device array (``set`` copies a host array in)."""

    def set(self, host: np.ndarray) -> None:
        self[...] = host


@pytest.mark.parametrize(
    ("option", "key"),
    [
        ({"sampling": "asymmetric"}, "input.sampling asymmetric"),
        # deeplabv3_sidewalk and sidewalk_retinanet resize with INTER_AREA: a ValueError (no FATAL line,
        # a traceback) ended a node started with processing_device gpu or auto on a CUDA machine
        ({"interpolation": "area"}, "input.interpolation area"),
        ({"interpolation": "cubic"}, "input.interpolation cubic"),
    ],
)
def test_the_gpu_preprocessor_serves_cpu_only_options_with_the_cpu_tensor(monkeypatch, option, key):
    """No CUDA needed: CuPy's allocation calls are numpy here and the kernel is never built or run;
    the GPU path returns exactly the CPU preprocessor's tensor and refuses device-side images."""
    import types

    import trt_perception.gpu.preprocess as gpu_preprocess

    fake_cupy = types.SimpleNamespace(
        empty=lambda shape, dtype: np.empty(shape, dtype).view(HostArray), uint8=np.uint8, float64=np.float64,
        zeros=lambda shape, dtype: np.zeros(shape, dtype).view(HostArray),
    )
    monkeypatch.setattr(gpu_preprocess, "require_cupy", lambda: fake_cupy)
    monkeypatch.setattr(gpu_preprocess, "preprocess_module", lambda *args: types.SimpleNamespace(get_function=lambda name: None))
    spec = InputSpec(size=(256, 256), layout="NHWC", normalization=norm("unit"), **option)
    gpu = gpu_preprocess.GpuPreprocessor(spec)
    bgr = cv2.imread(str(IMAGES / "quokka.jpg"), cv2.IMREAD_COLOR)
    tensor, geometry = gpu(bgr, "BGR")
    expected, expected_geometry = Preprocessor(spec)(bgr, "BGR")
    np.testing.assert_array_equal(np.asarray(tensor), expected)
    assert geometry == expected_geometry
    with pytest.raises(ValueError, match=f"{key}: not implemented by the GPU kernel"):
        gpu.run_on_device(*gpu.upload(bgr), geometry, "BGR")


# --------------------------------------------------------------------------- input handling

def test_strided_row_views_give_the_same_tensor_and_stay_untouched():
    padded = RNG.integers(0, 256, (40, 60 * 3 + 7), dtype=np.uint8)  # rows padded like a ROS `step`
    view = np.lib.stride_tricks.as_strided(padded, shape=(40, 60, 3), strides=(padded.strides[0], 3, 1))
    view.flags.writeable = False
    before = padded.copy()
    for size in [(40, 60), (25, 31)]:  # without and with a resize
        pre = make(size=size, layout="NCHW", color_order="BGR", normalization=norm("unit"))
        from_view = pre(view, "RGB")[0].copy()
        from_copy = pre(np.ascontiguousarray(view), "RGB")[0]
        np.testing.assert_array_equal(from_view, from_copy)
    np.testing.assert_array_equal(padded, before)


@pytest.mark.parametrize(
    ("image", "order", "message"),
    [
        (np.zeros((4, 4, 3), np.uint8), "RGBA", "image has 3 channels but channel order RGBA needs 4"),
        (np.zeros((4, 4), np.uint8), "RGB", "image has 1 channels but channel order RGB needs 3"),
        (np.zeros((4, 4, 3), np.uint8), "YUV", "unknown channel order 'YUV'"),
        (np.zeros((4, 4, 3), np.float32), "RGB", "image dtype must be uint8 or uint16, got float32"),
        (np.zeros((0, 4, 3), np.uint8), "RGB", "image is empty"),
        (np.zeros((4, 4, 3, 1), np.uint8), "RGB", "image must be an HxWxC numpy array"),
    ],
)
def test_bad_images_raise_errors_naming_the_problem(image, order, message):
    with pytest.raises(ImageDecodeError, match=message.replace("(", r"\(")):
        make()(image, order)


def test_sixteen_bit_image_into_uint8_model_is_refused():
    with pytest.raises(ImageDecodeError, match="uint16 image cannot feed a uint8 model input"):
        make(dtype="uint8", normalization=norm("none"))(np.zeros((2, 2, 3), np.uint16), "RGB")
