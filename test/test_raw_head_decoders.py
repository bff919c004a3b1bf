"""Raw-head detection decoders (ssd, yolo_anchors, yolox, dfl) and anchor generators on tensors whose
expected boxes are worked out by hand in each test from the published formulas, plus their load-time checks."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from trt_perception.decoders import create_decoder
from trt_perception.decoders.anchor_heads import AnchorBoxDecoder
from trt_perception.decoders.detection import DetectionDecoder
from trt_perception.decoders.grid_heads import GridHeadDecoder
from trt_perception.errors import InferenceError, SpecError
from trt_perception.geometry import ResizeGeometry


def decoder_for(config: dict, num_classes: int | None = None, base_dir=None) -> DetectionDecoder:
    decoder = create_decoder("detection", config, num_classes, base_dir)
    assert isinstance(decoder, DetectionDecoder)
    return decoder


def logit(p: float) -> float:
    return math.log(p / (1 - p))


# --------------------------------------------------------------------------- anchors


def test_multiscale_anchors_follow_the_retinanet_rule():
    """TF OD API multiscale_anchor_generator, min_level 3..max_level 7, anchor_scale 4, 2 scales per octave,
    aspect ratios 1, 2, 0.5: per cell aspect-major, scale-minor; base size 4 * 2**level pixels."""
    decoder = decoder_for(
        {
            "type": "ssd",
            "boxes": "b",
            "scores": "s",
            "score_activation": "sigmoid",
            "anchors": {
                "type": "multiscale",
                "min_level": 3,
                "max_level": 7,
                "anchor_scale": 4.0,
                "aspect_ratios": [1.0, 2.0, 0.5],
                "scales_per_octave": 2,
            },
        }
    )
    assert isinstance(decoder, AnchorBoxDecoder)
    anchors = decoder.anchors((640, 640))
    assert len(anchors) == (80 * 80 + 40 * 40 + 20 * 20 + 10 * 10 + 5 * 5) * 6
    # level 3, cell (0,0): centre 4 px; boxes 32 px (scale 1, ratio 1), 32*sqrt2 (scale 2**0.5, ratio 1),
    # then ratio 2: h = 32 / sqrt2, w = 32 * sqrt2.
    np.testing.assert_allclose(anchors[0] * 640, [4, 4, 32, 32], rtol=1e-5)
    np.testing.assert_allclose(anchors[1] * 640, [4, 4, 32 * 2**0.5, 32 * 2**0.5], rtol=1e-5)
    np.testing.assert_allclose(anchors[2] * 640, [4, 4, 32 / 2**0.5, 32 * 2**0.5], rtol=1e-5)
    # cell (row 1, column 2) of level 3: centre (8 + 4, 16 + 4)
    np.testing.assert_allclose(anchors[(1 * 80 + 2) * 6] * 640, [12, 20, 32, 32], rtol=1e-5)
    # the last anchor: level 7 (stride 128, base 512), last cell (4,4), scale 2**0.5, ratio 0.5
    np.testing.assert_allclose(
        anchors[-1] * 640, [4 * 128 + 64, 4 * 128 + 64, 512 * 2**0.5 * 2**0.5, 512 * 2**0.5 / 2**0.5], rtol=1e-5
    )


def test_multiscale_anchors_on_a_side_the_stride_does_not_divide_start_at_zero():
    """The generator centres cells at stride/2 only where the image side is a multiple of the stride."""
    decoder = decoder_for(
        {
            "type": "ssd",
            "boxes": "b",
            "scores": "s",
            "anchors": {
                "type": "multiscale",
                "min_level": 7,
                "max_level": 7,
                "aspect_ratios": [1.0],
                "scales_per_octave": 1,
            },
        }
    )
    anchors = decoder.anchors((320, 576))  # 320 % 128 = 64, 576 % 128 = 64: ceil -> 3 x 5 cells
    assert len(anchors) == 15
    np.testing.assert_allclose(anchors[0], [0.0, 0.0, 512 / 320, 512 / 576], rtol=1e-6)
    np.testing.assert_allclose(anchors[6], [128 / 320, 128 / 576, 512 / 320, 512 / 576], rtol=1e-6)


def test_anchor_and_grid_caches_keep_only_the_last_sizes_of_a_dynamic_size_model():
    """A dynamic-size model sees a new input size per image shape: the per-size anchors and grid cells are
    kept for the 8 most recently used sizes only, and a size made again gives the same values."""
    ssd = decoder_for({"type": "ssd", "boxes": "b", "scores": "s",
                       "anchors": {"type": "multiscale", "min_level": 3, "max_level": 4,
                                   "aspect_ratios": [1.0], "scales_per_octave": 1}})
    yolox = decoder_for({"type": "yolox", "outputs": ["s8", "s16"], "strides": [8, 16]}, 2)
    assert isinstance(ssd, AnchorBoxDecoder) and isinstance(yolox, GridHeadDecoder)
    first_anchors, first_cells = ssd.anchors((64, 64)).copy(), yolox.cells((64, 64))
    for side in range(80, 80 + 16 * 20, 16):
        ssd.anchors((side, side))
        yolox.cells((side, side))
        assert len(ssd._anchors) <= 8 and len(yolox._cells) <= 8
    assert len(ssd._anchors) == len(yolox._cells) == 8
    recent = ssd.anchors((80 + 16 * 19, 80 + 16 * 19))
    assert ssd.anchors((80 + 16 * 19, 80 + 16 * 19)) is recent  # still cached
    np.testing.assert_array_equal(ssd.anchors((64, 64)), first_anchors)  # made again after being dropped
    # 64x64 with strides 8 and 16: 8x8 + 4x4 cells
    assert len(yolox.cells((64, 64)).x) == len(first_cells.x) == 64 + 16


HUGE_ANCHORS = [
    # feature map sizes mistyped: 100000x100000 cells of 3 boxes (the lowest layer's), then 10x10 cells of the
    # three ratios and the interpolated box
    ({"type": "ssd", "feature_map_sizes": [100000, 10], "aspect_ratios": [1.0, 2.0, 0.5],
      "interpolated_scale_aspect_ratio": 1.0, "reduce_boxes_in_lowest_layer": True},
     (300, 300), 100000 * 100000 * 3 + 10 * 10 * 4),
    # levels 3..7 on a 100000x100000 input: ceil(100000 / stride) cells a side, 3 ratios x 2 scales each
    ({"type": "multiscale", "min_level": 3, "max_level": 7, "aspect_ratios": [1.0, 2.0, 0.5], "scales_per_octave": 2},
     (100000, 100000), (12500**2 + 6250**2 + 3125**2 + 1563**2 + 782**2) * 6),
    # stride 1 on a 4000x5000 input, one box per cell
    ({"type": "mediapipe", "strides": [1], "aspect_ratios": [1.0], "interpolated_scale_aspect_ratio": 0.0,
      "reduce_boxes_in_lowest_layer": False, "min_scale": 0.1, "max_scale": 0.9},
     (4000, 5000), 4000 * 5000),
]


@pytest.mark.parametrize(("anchors", "network_size", "count"), HUGE_ANCHORS)
def test_anchors_beyond_any_box_predictor_are_a_spec_error_before_any_is_made(anchors, network_size, count):
    """Billions of anchors from a mistyped size were a numpy MemoryError (a traceback in infer and at a
    node's start); now one SpecError with the count, raised before the arrays are allocated."""
    decoder = decoder_for({"type": "ssd", "boxes": "b", "scores": "s", "anchors": anchors})
    assert isinstance(decoder, AnchorBoxDecoder)
    height, width = network_size
    with pytest.raises(SpecError, match=rf"^decoder\.anchors: {count} anchors for a {width}x{height} network input "
                                        r"\(width x height; per feature map"):
        decoder.anchors(network_size)


def test_a_frame_whose_network_input_needs_too_many_anchors_is_that_frames_inference_error():
    """A dynamic-size RetinaNet-style model (levels 3..7, 9 boxes per cell) given an 8192x8192 network input:
    (1024**2 + 512**2 + 256**2 + 128**2 + 64**2) * 9 = 12,570,624 anchors, an InferenceError of that frame
    (the node reports it and takes the next frame; infer goes on with the next image), not a spec error."""
    decoder = decoder_for({"type": "ssd", "boxes": "b", "scores": "s", "score_activation": "sigmoid",
                           "anchors": {"type": "multiscale", "min_level": 3, "max_level": 7,
                                       "aspect_ratios": [1.0, 2.0, 0.5], "scales_per_octave": 3}})
    outputs = {"b": np.zeros((1, 5, 4), np.float32), "s": np.zeros((1, 5, 2), np.float32)}
    count = (1024**2 + 512**2 + 256**2 + 128**2 + 64**2) * 9
    with pytest.raises(InferenceError, match=rf"^decoder\.anchors: {count} anchors for a 8192x8192 network input"):
        decoder.decode(outputs, ResizeGeometry.stretch((8192, 8192), (8192, 8192)), 0.5)


def test_the_anchor_limit_counts_exactly(monkeypatch):
    """TF OD API's SSD rule on 19, 10, 5, 3, 2, 1 cells (lowest layer 3 boxes, the others 5 ratios plus
    the interpolated box): 19*19*3 + (100 + 25 + 9 + 4 + 1) * 6 = 1917 anchors, allowed at a limit of 1917."""
    from trt_perception.decoders import anchors as anchor_module

    config = {"type": "ssd", "boxes": "b", "scores": "s",
              "anchors": {"type": "ssd", "feature_map_sizes": [19, 10, 5, 3, 2, 1], "aspect_ratios": [1.0, 2.0, 0.5, 3.0, 0.3333],
                          "interpolated_scale_aspect_ratio": 1.0, "reduce_boxes_in_lowest_layer": True}}
    monkeypatch.setattr(anchor_module, "MAX_ANCHORS", 1917)
    ssd = decoder_for(config)
    assert isinstance(ssd, AnchorBoxDecoder)
    assert len(ssd.anchors((300, 300))) == 19 * 19 * 3 + (100 + 25 + 9 + 4 + 1) * 6 == 1917
    monkeypatch.setattr(anchor_module, "MAX_ANCHORS", 1916)
    with pytest.raises(SpecError, match=r"decoder\.anchors: 1917 anchors for a 300x300 .*19x19x3, 10x10x6, 5x5x6, 3x3x6, "
                                        r"2x2x6, 1x1x6\), more than the 1916"):
        decoder_for(config).anchors((300, 300))


def test_mediapipe_blazeface_anchors():
    """MediaPipe's face_detection_short_range options: 128x128, strides 8,16,16,16, fixed anchor size:
    2 anchors per 16x16 cell, then 6 per 8x8 cell (three layers share stride 16), 896 in all."""
    decoder = decoder_for(
        {
            "type": "ssd",
            "boxes": "b",
            "scores": "s",
            "anchors": {
                "type": "mediapipe",
                "strides": [8, 16, 16, 16],
                "min_scale": 0.1484375,
                "max_scale": 0.75,
                "aspect_ratios": [1.0],
                "fixed_anchor_size": True,
            },
        }
    )
    anchors = decoder.anchors((128, 128))
    assert len(anchors) == 896
    np.testing.assert_allclose(anchors[0], [0.5 / 16, 0.5 / 16, 1, 1])
    np.testing.assert_allclose(anchors[1], [0.5 / 16, 0.5 / 16, 1, 1])
    np.testing.assert_allclose(anchors[2], [0.5 / 16, 1.5 / 16, 1, 1])
    np.testing.assert_allclose(anchors[512], [0.5 / 8, 0.5 / 8, 1, 1])
    np.testing.assert_allclose(anchors[512 + 6], [0.5 / 8, 1.5 / 8, 1, 1])


def test_anchors_from_npy_and_text_files(tmp_path):
    table = np.array([[0.5, 0.5, 0.2, 0.4], [0.25, 0.75, 0.1, 0.1]], np.float32)
    np.save(tmp_path / "anchors.npy", table)
    np.savetxt(tmp_path / "anchors.txt", table)
    for name in ("anchors.npy", "anchors.txt"):
        decoder = decoder_for(
            {"type": "ssd", "boxes": "b", "scores": "s", "anchors": {"type": "file", "path": name}}, base_dir=tmp_path
        )
        np.testing.assert_allclose(decoder.anchors((10, 10)), table)
    (tmp_path / "bad.txt").write_text("1 2 3\n")
    with pytest.raises(SpecError, match=r"decoder.anchors.path: .*bad.txt holds shape \[1, 3\]"):
        decoder_for(
            {"type": "ssd", "boxes": "b", "scores": "s", "anchors": {"type": "file", "path": "bad.txt"}},
            base_dir=tmp_path,
        )


def test_anchors_path_to_a_device_or_an_oversized_file_is_refused_before_reading(tmp_path):
    huge = tmp_path / "huge.txt"
    with open(huge, "wb") as file:  # sparse: 64 MiB + 1 byte claimed, nothing written
        file.truncate((64 << 20) + 1)
    assert os.stat(huge).st_size == 67108865
    for path, problem in (("/dev/zero", "is not a regular file"), (str(huge), "has 67108865 bytes, more than 67108864")):
        with pytest.raises(SpecError, match=f"decoder.anchors.path: anchors file .* {problem}"):
            decoder_for({"type": "ssd", "boxes": "b", "scores": "s", "anchors": {"type": "file", "path": path}},
                        base_dir=tmp_path)


# --------------------------------------------------------------------------- ssd decoding


def file_anchor_decoder(tmp_path, anchors, num_classes=None, **config) -> DetectionDecoder:
    np.save(tmp_path / "a.npy", np.asarray(anchors, np.float32))
    return decoder_for(
        {"type": "ssd", "boxes": "box", "scores": "cls", "anchors": {"type": "file", "path": "a.npy"}, **config},
        num_classes,
        tmp_path,
    )


def test_ssd_box_coder_yx_with_softmax_and_background(tmp_path):
    decoder = file_anchor_decoder(
        tmp_path, [[0.5, 0.5, 0.2, 0.4], [0.2, 0.2, 0.1, 0.1]], score_activation="softmax", background_column=0
    )
    boxes = np.array([[[1.0, -2.0, 0.5, 0.0]], [[0, 0, 0, 0]]], np.float32)[None]  # [1,2,1,4]
    logits = np.array([[[0.0, 3.0, 0.0], [5.0, 0.0, 0.0]]], np.float32)
    result = decoder.decode({"box": boxes, "cls": logits}, ResizeGeometry.stretch((100, 200), (100, 200)), 0.5)
    # cy = 1/10*0.2 + 0.5 = 0.52, cx = -2/10*0.4 + 0.5 = 0.42, h = exp(0.5/5)*0.2, w = 0.4
    cy, cx, h, w = 0.52, 0.42, math.exp(0.1) * 0.2, 0.4
    np.testing.assert_allclose(
        result.boxes, [[(cx - w / 2) * 200, (cy - h / 2) * 100, (cx + w / 2) * 200, (cy + h / 2) * 100]], rtol=1e-5
    )
    np.testing.assert_allclose(result.scores, [math.exp(3) / (math.exp(3) + 2)], rtol=1e-5)
    assert result.class_ids.tolist() == [0]  # column 1, background column 0 dropped


def test_ssd_mediapipe_style_xy_linear_coder_ignores_keypoint_columns(tmp_path):
    decoder = file_anchor_decoder(
        tmp_path,
        [[0.5, 0.25, 1.0, 1.0]],
        score_activation="sigmoid",
        box_coder={
            "x_scale": 128,
            "y_scale": 128,
            "width_scale": 128,
            "height_scale": 128,
            "order": "xy",
            "size": "linear",
        },
    )
    row = [12.8, -6.4, 32.0, 64.0, 99, 99, 99, 99]  # cx offset, cy offset, w, h, two keypoints
    result = decoder.decode(
        {"box": np.array([[row]], np.float32), "cls": np.array([[[logit(0.9)]]], np.float32)},
        ResizeGeometry.stretch((128, 128), (128, 128)),
        0.5,
    )
    cx, cy, w, h = 0.25 + 0.1, 0.5 - 0.05, 0.25, 0.5
    np.testing.assert_allclose(result.boxes[0] / 128, [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], rtol=1e-5)
    np.testing.assert_allclose(result.scores, [0.9], rtol=1e-5)


def test_ssd_logits_without_activation_are_an_error_not_detections(tmp_path):
    decoder = file_anchor_decoder(tmp_path, [[0.5, 0.5, 0.2, 0.2]])
    with pytest.raises(InferenceError, match=r"'cls' gives scores .*5\.7.* set decoder.score_activation"):
        decoder.decode(
            {"box": np.zeros((1, 1, 4), np.float32), "cls": np.array([[[5.7, 18.0]]], np.float32)},
            ResizeGeometry.stretch((10, 10), (10, 10)),
            0.3,
        )


def test_ssd_load_check_counts_anchors_and_names_outputs(tmp_path):
    decoder = file_anchor_decoder(tmp_path, [[0.5, 0.5, 0.2, 0.2]] * 3, num_classes=2, background_column=0)
    decoder.check_outputs({"box": (1, 3, 4), "cls": (1, 3, 3)}, (10, 10))
    with pytest.raises(
        SpecError, match=r"decoder.boxes: the model output 'box' has 5 rows but decoder.anchors gives 3"
    ):
        decoder.check_outputs({"box": (1, 5, 4), "cls": (1, 5, 3)}, (10, 10))
    with pytest.raises(
        SpecError, match=r"decoder.scores: the model has no output 'cls'; its outputs: box \[1,3,4\], x \[\?,3\]"
    ):
        decoder.check_outputs({"box": (1, 3, 4), "x": (None, 3)}, (10, 10))
    with pytest.raises(
        SpecError, match=r"labels: 2 labels, but the model output 'cls' has 24 class columns \(23 classes"
    ):
        decoder.check_outputs({"box": (1, 3, 4), "cls": (1, 3, 24)}, (10, 10))


# --------------------------------------------------------------------------- YOLO with anchors

YOLO_CONFIG = {
    "type": "yolo_anchors",
    "outputs": ["p5", "p4"],
    "strides": [32, 16],
    "score_activation": "sigmoid",
    "anchors": [[[81, 82], [135, 169]], [[10, 14], [23, 27]]],
}


def yolo_heads(classes: int = 3) -> tuple[dict, tuple]:
    """Two heads for a 64x64 input (2x2 and 4x4 cells, 2 anchors) with one confident box: level 1, row 2,
    column 1, anchor 1."""
    k = 5 + classes
    p5 = np.full((1, 2 * k, 2, 2), -9.0, np.float32)
    p4 = np.full((1, 2 * k, 4, 4), -9.0, np.float32)
    t = [0.3, -0.2, 0.1, -0.4, logit(0.8)] + [-9.0] * classes
    t[5 + 2] = logit(0.9)
    p4[0, k : 2 * k, 2, 1] = t
    return {"p5": p5, "p4": p4}, (t, 1, 2, 16, (23, 27))


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


@pytest.mark.parametrize("version", ["v3", "v5"])
def test_yolo_anchor_heads_decode_by_the_published_formulas(version):
    outputs, (t, col, row, stride, (aw, ah)) = yolo_heads()
    decoder = decoder_for({**YOLO_CONFIG, "version": version}, 3)
    result = decoder.decode(outputs, ResizeGeometry.stretch((64, 64), (64, 64)), 0.5)
    if version == "v3":
        cx, cy = (sig(t[0]) + col) * stride, (sig(t[1]) + row) * stride
        w, h = math.exp(t[2]) * aw, math.exp(t[3]) * ah
    else:
        cx, cy = (2 * sig(t[0]) - 0.5 + col) * stride, (2 * sig(t[1]) - 0.5 + row) * stride
        w, h = (2 * sig(t[2])) ** 2 * aw, (2 * sig(t[3])) ** 2 * ah
    np.testing.assert_allclose(result.boxes, [[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]], rtol=1e-5)
    np.testing.assert_allclose(result.scores, [0.8 * 0.9], rtol=1e-5)
    assert result.class_ids.tolist() == [2]


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({**YOLO_CONFIG, "scale_x_y": math.inf}, "decoder.scale_x_y"),
        ({"type": "yolox", "outputs": "out", "strides": [8], "cell_offset": -math.inf}, "decoder.cell_offset"),
        ({"type": "ssd", "boxes": "b", "scores": "s", "anchors": {"type": "ssd", "feature_map_sizes": [1]},
          "box_coder": {"y_scale": math.inf}}, "decoder.box_coder.y_scale"),
        ({"type": "ssd", "boxes": "b", "scores": "s", "anchors": {
            "type": "ssd", "feature_map_sizes": [1], "interpolated_scale_aspect_ratio": math.inf}},
         "decoder.anchors.interpolated_scale_aspect_ratio"),
        ({"type": "db_text", "unclip_ratio": math.inf}, "decoder.unclip_ratio"),
    ],
)
def test_infinite_decoder_numbers_are_spec_errors(config, key):
    """YAML's .inf is a float: a decoder number that took it published boxes of NaN (scale_x_y: .inf
    on yolov3_tiny_coco gave 7 detections with NaN corners on dog.jpg) instead of refusing the spec."""
    with pytest.raises(SpecError, match=f"^{key}: expected a number, got -?inf$"):
        decoder_for(config, 3)


def test_infinite_yolo_anchor_sizes_are_spec_errors():
    """An anchor of .inf (or a float32 overflow such as 1e39) gave boxes of infinite size, clipped
    to the whole image; an integer beyond float's range (10**400) an OverflowError traceback."""
    for size in (math.inf, 1e39, 10**400):
        anchors = [[[81, 82], [135, 169]], [[10, 14], [size, 27]]]
        with pytest.raises(SpecError, match="^decoder.anchors: expected one list of .width, height. pairs"):
            decoder_for({**YOLO_CONFIG, "anchors": anchors}, 3)


def test_yolo_anchor_heads_in_nhwc_and_five_dimensional_layouts_decode_the_same():
    outputs, _ = yolo_heads()
    geometry = ResizeGeometry.stretch((64, 64), (64, 64))
    expected = decoder_for(YOLO_CONFIG, 3).decode(outputs, geometry, 0.5)
    nhwc = {name: np.ascontiguousarray(t.transpose(0, 2, 3, 1)) for name, t in outputs.items()}
    five = {
        name: np.ascontiguousarray(t.reshape(1, 2, 8, *t.shape[2:]).transpose(0, 1, 3, 4, 2))
        for name, t in outputs.items()
    }
    for variant in (nhwc, five):
        got = decoder_for(YOLO_CONFIG, 3).decode(variant, geometry, 0.5)
        np.testing.assert_array_equal(got.boxes, expected.boxes)
        np.testing.assert_array_equal(got.scores, expected.scores)


def test_yolo_anchor_load_check_gives_the_expected_grid():
    decoder = decoder_for(YOLO_CONFIG, 3)
    decoder.check_outputs({"p5": (1, 16, 2, 2), "p4": (1, 16, 4, 4)}, (64, 64))
    with pytest.raises(
        SpecError,
        match=r"decoder.outputs\[1\]: the model output 'p4' has shape \[1,16,8,8\]; " r"expected \[B,2\*8,4,4\]",
    ):
        decoder.check_outputs({"p5": (1, 16, 2, 2), "p4": (1, 16, 8, 8)}, (64, 64))


# --------------------------------------------------------------------------- YOLOX and DFL


def test_yolox_per_stride_and_concatenated_give_the_hand_box():
    classes = 2
    s8 = np.full((1, 5 + classes, 4, 4), 0.0, np.float32)  # probabilities already (YOLOX export)
    s16 = np.full((1, 5 + classes, 2, 2), 0.0, np.float32)
    s16[0, :, 1, 0] = [0.5, 0.25, math.log(3.0), math.log(2.0), 0.9, 0.1, 0.8]
    config = {"type": "yolox", "outputs": ["s8", "s16"], "strides": [8, 16]}
    geometry = ResizeGeometry.stretch((32, 32), (32, 32))
    result = decoder_for(config, classes).decode({"s8": s8, "s16": s16}, geometry, 0.5)
    cx, cy, w, h = (0.5 + 0) * 16, (0.25 + 1) * 16, 3.0 * 16, 2.0 * 16
    np.testing.assert_allclose(result.boxes, [[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]], rtol=1e-5)
    np.testing.assert_allclose(result.scores, [0.72], rtol=1e-5)
    assert result.class_ids.tolist() == [1]
    rows = np.concatenate([s8.reshape(1, 7, -1), s16.reshape(1, 7, -1)], axis=2).transpose(0, 2, 1)  # [1,20,7]
    concatenated = decoder_for({**config, "outputs": "all"}, classes).decode({"all": rows}, geometry, 0.5)
    np.testing.assert_array_equal(concatenated.boxes, result.boxes)


def test_dfl_yolov8_style_with_separate_scores_and_extra_columns():
    bins, classes = 4, 2
    box = np.full((1, 4 * bins, 2, 2), -20.0, np.float32)
    # cell (row 0, col 1): left=1, top=2 (one-hot bins), right = expectation of a 50/50 split of bins 2 and 3
    for side, target in enumerate([1, 2, None, 0]):
        if target is None:
            box[0, side * bins + 2, 0, 1] = box[0, side * bins + 3, 0, 1] = 0.0
        else:
            box[0, side * bins + target, 0, 1] = 0.0
    scores = np.full((1, classes + 1, 2, 2), -9.0, np.float32)  # one extra (e.g. a mask coefficient) column
    scores[0, 0, 0, 1] = logit(0.7)
    config = {
        "type": "dfl",
        "outputs": ["box"],
        "scores": ["cls"],
        "strides": [16],
        "bins": bins,
        "cell_offset": 0.5,
        "score_activation": "sigmoid",
        "extra_columns": 1,
    }
    result = decoder_for(config, classes).decode(
        {"box": box, "cls": scores}, ResizeGeometry.stretch((32, 32), (32, 32)), 0.5
    )
    px, py = (1 + 0.5) * 16, (0 + 0.5) * 16
    left, top, right, bottom = 1 * 16, 2 * 16, 2.5 * 16, 0 * 16
    np.testing.assert_allclose(result.boxes, [[px - left, py - top, px + right, py + bottom]], atol=1e-3)
    np.testing.assert_allclose(result.scores, [0.7], rtol=1e-5)


def test_dfl_nanodet_style_single_output_with_scores_first():
    """NanoDet-Plus: one [1,N,C+4*bins] tensor, class probabilities then distributions, points at cell corners."""
    bins, classes = 8, 3
    rows = np.full((1, 8 * 8 + 4 * 4, classes + 4 * bins), -30.0, np.float32)
    rows[..., :classes] = 0.0
    cell = 8 * 8 + 1 * 4 + 2  # stride 16, row 1, column 2
    rows[0, cell, 1] = 0.6
    for side, target in enumerate([3, 1, 2, 5]):
        rows[0, cell, classes + side * bins + target] = 0.0
    config = {"type": "dfl", "outputs": "out", "strides": [8, 16], "bins": bins, "order": "scores_first"}
    decoder = decoder_for(config, classes)
    decoder.check_outputs({"out": (1, 80, 35)}, (64, 64))
    result = decoder.decode({"out": rows}, ResizeGeometry.stretch((64, 64), (64, 64)), 0.5)
    px, py = 2 * 16, 1 * 16
    np.testing.assert_allclose(result.boxes, [[px - 3 * 16, py - 1 * 16, px + 2 * 16, py + 5 * 16]], atol=1e-3)
    assert result.class_ids.tolist() == [1]
    with pytest.raises(
        SpecError, match=r"decoder.outputs: the model output 'out' has shape \[1,81,35\]; expected \[B,80,35\]"
    ):
        decoder.check_outputs({"out": (1, 81, 35)}, (64, 64))


def test_every_decoder_example_in_the_docs_is_a_valid_decoder():
    """docs/model_spec.md's examples per family stay valid specs."""
    import yaml
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "model_spec.md").read_text()
    section = text.split("## Raw detection heads", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    examples = [yaml.safe_load(chunk) for chunk in block.split("\n\n")]
    assert len(examples) == 7
    for example in examples:
        assert isinstance(decoder_for(example["decoder"]), DetectionDecoder)
