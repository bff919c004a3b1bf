"""ResizeGeometry: boxes survive the round trip between source and network pixels, for random sizes."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from trt_perception.decoders.segmentation import resize_to_output
from trt_perception.geometry import ResizeGeometry

sizes = st.tuples(st.integers(1, 4000), st.integers(1, 4000))
network_sizes = st.tuples(st.integers(8, 2048), st.integers(8, 2048))
modes = st.sampled_from(["stretch", "letterbox_centered", "letterbox_top_left"])
fractions = st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4)


def make_geometry(mode: str, source: tuple[int, int], network: tuple[int, int]) -> ResizeGeometry:
    if mode == "stretch":
        return ResizeGeometry.stretch(source, network)
    return ResizeGeometry.letterbox(source, network, "centered" if mode == "letterbox_centered" else "top_left")


def box_inside(size: tuple[int, int], offset: tuple[int, int], f: list[float]) -> np.ndarray:
    """An xyxy box inside the rectangle ``offset .. offset + size`` from four fractions."""
    (height, width), (top, left) = size, offset
    x1, x2 = sorted((left + f[0] * width, left + f[1] * width))
    y1, y2 = sorted((top + f[2] * height, top + f[3] * height))
    return np.array([[x1, y1, x2, y2]])


@settings(max_examples=300, deadline=None)
@given(source=sizes, network=network_sizes, mode=modes, f=fractions)
def test_network_box_maps_to_source_and_back_unchanged(source, network, mode, f):
    geometry = make_geometry(mode, source, network)
    box = box_inside(geometry.content_size, geometry.offset, f)
    in_source = geometry.boxes_to_source(box, clip=False)
    back = geometry.boxes_to_network(in_source)
    # float32 in the source step: relative precision ~6e-8 of coordinates up to a few thousand pixels
    np.testing.assert_allclose(back, box, atol=1e-3, rtol=1e-6)


@settings(max_examples=300, deadline=None)
@given(source=sizes, network=network_sizes, mode=modes, f=fractions)
def test_source_box_maps_to_network_and_back_unchanged(source, network, mode, f):
    geometry = make_geometry(mode, source, network)
    box = box_inside(source, (0, 0), f)
    back = geometry.boxes_to_source(geometry.boxes_to_network(box))
    np.testing.assert_allclose(back, box, atol=1e-3, rtol=1e-6)
    # the whole image maps onto exactly the content window
    corners = geometry.boxes_to_network([[0, 0, source[1], source[0]]])[0]
    top, left = geometry.offset
    np.testing.assert_allclose(
        corners, [left, top, left + geometry.content_size[1], top + geometry.content_size[0]], atol=1e-6
    )


@settings(max_examples=300, deadline=None)
@given(source=sizes, network=network_sizes, placement=st.sampled_from(["centered", "top_left"]))
def test_letterbox_keeps_aspect_ratio_and_fits(source, network, placement):
    geometry = ResizeGeometry.letterbox(source, network, placement)
    (content_h, content_w), (top, left) = geometry.content_size, geometry.offset
    assert 1 <= content_h <= network[0] and 1 <= content_w <= network[1]
    assert content_h == network[0] or content_w == network[1], "one side must fill the network input"
    # each side is the exact scaled size rounded, so the two scales differ by at most half a pixel each
    scale = min(network[0] / source[0], network[1] / source[1])
    assert abs(content_h - source[0] * scale) <= 0.5 + 1e-9 or content_h == 1
    assert abs(content_w - source[1] * scale) <= 0.5 + 1e-9 or content_w == 1
    if placement == "centered":
        assert top == (network[0] - content_h) // 2 and left == (network[1] - content_w) // 2
    else:
        assert (top, left) == (0, 0)


@settings(max_examples=100, deadline=None)
@given(
    source=st.tuples(st.integers(1, 300), st.integers(1, 300)),
    network=st.tuples(st.integers(8, 300), st.integers(8, 300)),
    mode=modes,
)
def test_labels_at_source_crop_exactly_the_content(source, network, mode):
    geometry = make_geometry(mode, source, network)
    network_map = np.zeros(network, np.uint8)
    top, left = geometry.offset
    network_map[top : top + geometry.content_size[0], left : left + geometry.content_size[1]] = 1
    in_source = resize_to_output(network_map, geometry, at_source=True)
    assert in_source.shape == source
    assert np.all(in_source == 1), "padding leaked into the source-size map"
