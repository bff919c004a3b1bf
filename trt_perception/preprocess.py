"""Source image -> network input tensor, as the model spec's ``input`` section describes.

Order of work: resize the source (stretch or letterbox, OpenCV, strided row views accepted) ->
convert the colour order at network size -> normalize, change layout and dtype while writing into
a buffer that is reused for every image of the same network size. Pixel values are in 8-bit units:
16-bit images are scaled by 255/65535 first, so one spec serves both.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.typing as npt

from trt_perception.errors import ImageDecodeError
from trt_perception.geometry import ResizeGeometry, sampling_grid
from trt_perception.row_bands import run_in_bands, shared_row_bands
from trt_perception.spec import MAX_NETWORK_SIDE, DynamicSize, InputSpec, NormalizationSpec, PostAffine

CHANNELS_PER_ORDER = {"RGB": 3, "BGR": 3, "RGBA": 4, "BGRA": 4, "MONO": 1}

INTERPOLATION_FLAGS = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
}
# Resampled with Pillow instead of OpenCV (``pil_resize``), by the name in ``input.interpolation``.
PIL_INTERPOLATIONS = {"pil_bilinear": "BILINEAR"}
# The interpolations the GPU preprocessor's kernel implements (``cpu_only_input_options``).
GPU_KERNEL_INTERPOLATIONS = ("linear", "nearest")

# (source channel order, model colour order) -> cv2 conversion; absent when none is needed.
_COLOR_CONVERSIONS = {
    ("RGB", "BGR"): cv2.COLOR_RGB2BGR,
    ("BGR", "RGB"): cv2.COLOR_BGR2RGB,
    ("RGBA", "RGB"): cv2.COLOR_RGBA2RGB,
    ("RGBA", "BGR"): cv2.COLOR_RGBA2BGR,
    ("BGRA", "RGB"): cv2.COLOR_BGRA2RGB,
    ("BGRA", "BGR"): cv2.COLOR_BGRA2BGR,
    ("MONO", "RGB"): cv2.COLOR_GRAY2RGB,
    ("MONO", "BGR"): cv2.COLOR_GRAY2BGR,
}

_FULL_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
# Images from this size on are remapped in row bands on several cores (measured on 2 cores, frames not
# in cache: 1080p rgb8 0.49 -> 0.32 ms, 720p 0.33 -> 0.28 ms; at 640x480 the hand-off costs more than
# it saves).
BANDED_REMAP_MIN_BYTES = 2 << 20
# cv2.remap's limit on source and output sides (below SHRT_MAX, its 16-bit map coordinates).
MAX_SAMPLED_SIDE = 32766


def convert_color(pixels: npt.NDArray, channel_order: str, color_order: str) -> npt.NDArray:
    """``pixels`` (HxWxC or HxW for MONO) as a 3-channel image in ``color_order``; no copy when
    the order already matches."""
    code = _COLOR_CONVERSIONS.get((channel_order, color_order))
    return pixels if code is None else cv2.cvtColor(pixels, code)


def dynamic_network_size(
    source_size: tuple[int, int], rule: DynamicSize, keep_aspect_ratio: bool
) -> tuple[int, int]:
    """Network size for one source image under a dynamic size rule.

    Scale so the short side becomes ``short_side`` (never below 1 with ``upscale_only``; less when
    the long side would exceed ``max_long_side``), make each scaled side whole pixels
    (``rule.side_rounding``: truncated, as PaddleOCR / RapidOCR do, or ``transformers_sides``), then a
    multiple of ``multiple_of``: the nearest multiple (Python's ``round``, halves to even) or the
    next one up (``rule.rounding``; by default up when keeping the aspect ratio, for the letterbox
    padding, else nearest). Never below one multiple.
    """
    if rule.side_rounding == "transformers":
        height, width = transformers_sides(source_size, rule.short_side, rule.max_long_side)
    else:
        height, width = _truncated_sides(source_size, rule)
    step = rule.multiple_of
    rounding = rule.rounding or ("up" if keep_aspect_ratio else "nearest")
    to_multiple = math.ceil if rounding == "up" else round
    return max(step, int(to_multiple(height / step)) * step), max(step, int(to_multiple(width / step)) * step)


def _truncated_sides(source_size: tuple[int, int], rule: DynamicSize) -> tuple[int, int]:
    """The scaled sides of ``dynamic_network_size``, each truncated to whole pixels."""
    height, width = source_size
    scale = rule.short_side / min(height, width)
    if rule.upscale_only:
        scale = max(scale, 1.0)
    if rule.max_long_side is not None:
        scale = min(scale, rule.max_long_side / max(height, width))
    return int(height * scale), int(width * scale)


def transformers_sides(source_size: tuple[int, int], short_side: int, max_long_side: int | None) -> tuple[int, int]:
    """(height, width) as Hugging Face's ``get_size_with_aspect_ratio`` (DetrImageProcessor and its
    relatives) makes them: the short side becomes ``short_side``, unless the long side would then
    exceed ``max_long_side``: then the short side is ``max_long_side * short / long``, rounded (Python's
    round) and the long side that unrounded value times ``long / short``, truncated. An image whose
    short side already has that length keeps its size."""
    height, width = source_size
    short, long = min(height, width), max(height, width)
    unrounded: float | None = None
    size = short_side
    if max_long_side is not None and long / short * short_side > max_long_side:
        unrounded = max_long_side * short / long
        size = int(round(unrounded))
    if short == size:
        return height, width
    scaled_long = int((size if unrounded is None else unrounded) * long / short)
    return (size, scaled_long) if height <= width else (scaled_long, size)


def affine_normalization(normalization: NormalizationSpec) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Per-channel ``(scale, offset)`` with ``value = pixel * scale + offset`` for pixels in 0..255.

    Not defined for ``per_image_standardization``, whose statistics depend on the image.
    """
    kind = normalization.type
    if kind == "none":
        scale, offset = [1.0] * 3, [0.0] * 3
    elif kind == "unit":
        scale, offset = [1 / 255] * 3, [0.0] * 3
    elif kind == "symmetric":
        scale, offset = [1 / 127.5] * 3, [-1.0] * 3
    elif kind == "mean_std":
        assert normalization.mean is not None and normalization.std is not None
        unit = 255.0 if normalization.range == "unit" else 1.0
        scale = [1 / (unit * s) for s in normalization.std]
        offset = [-m / s for m, s in zip(normalization.mean, normalization.std)]
    else:
        raise ValueError(f"normalization {kind} has no fixed affine form")
    return np.array(scale, np.float32), np.array(offset, np.float32)


def with_post_affine(
    scale: npt.NDArray[np.float32], offset: npt.NDArray[np.float32], post: PostAffine | None
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """``(scale, offset)`` followed by ``post``'s affine step (its clip is applied separately)."""
    if post is None:
        return scale, offset
    return (scale * np.float32(post.scale)).astype(np.float32), (offset * np.float32(post.scale) + np.float32(post.offset)).astype(np.float32)


def sampling_maps(
    source_size: tuple[int, int], size: tuple[int, int], sampling: str
) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.uint16]]:
    """``cv2.remap`` maps (fixed point, 1/32 pixel, the layout ``cv2.convertMaps`` makes for
    ``CV_16SC2``) that resample an image of ``source_size`` to ``size`` (height, width) on the grid
    ``sampling`` (``geometry.sampling_grid``), positions rounded to 1/32 pixel as OpenCV's warps do."""
    (height, width), (out_h, out_w) = source_size, size
    step_x, offset_x = sampling_grid(width, out_w, sampling)
    step_y, offset_y = sampling_grid(height, out_h, sampling)
    columns = np.rint((np.arange(out_w) * step_x + offset_x) * 32).astype(np.int64)
    rows = np.rint((np.arange(out_h) * step_y + offset_y) * 32).astype(np.int64)
    whole = np.empty((out_h, out_w, 2), np.int16)
    whole[:, :, 0] = columns >> 5
    whole[:, :, 1] = (rows >> 5)[:, None]
    fractions = ((rows & 31)[:, None] * 32 + (columns & 31)[None, :]).astype(np.uint16)
    return whole, fractions


def resize_with_sampling(
    pixels: npt.NDArray, maps: tuple[npt.NDArray[np.int16], npt.NDArray[np.uint16]]
) -> npt.NDArray:
    """``pixels`` resampled bilinearly with ``sampling_maps`` (OpenCV's fixed-point remap, the
    arithmetic of its classic warpAffine / warpPerspective, which MediaPipe's ImageToTensor uses).
    No area filtering when shrinking (neither do those pipelines); samples past the last pixel
    repeat it. Every output pixel depends on its map entry alone, so for a large image (whose rows
    are mostly read from memory, not cache) bands of output rows are remapped on several cores;
    OpenCV keeps a network-sized remap on one."""
    resized = np.empty((*maps[0].shape[:2], *pixels.shape[2:]), pixels.dtype)

    def remap_rows(start: int, stop: int) -> None:
        remap_output_rows(pixels, maps, start, stop, resized[start:stop])

    run_in_bands(remap_rows, resized.shape[0], pixels.nbytes, BANDED_REMAP_MIN_BYTES)
    return resized


def remap_output_rows(
    pixels: npt.NDArray, maps: tuple[npt.NDArray[np.int16], npt.NDArray[np.uint16]], start: int, stop: int,
    out: npt.NDArray | None = None,
) -> npt.NDArray:
    """Output rows ``start..stop`` of ``resize_with_sampling`` (into ``out`` when given)."""
    whole, fractions = maps
    return cv2.remap(pixels, whole[start:stop], fractions[start:stop], cv2.INTER_LINEAR, out, cv2.BORDER_REPLICATE)


def pil_resize(pixels: npt.NDArray, size: tuple[int, int], resample: str) -> npt.NDArray[np.uint8]:
    """An 8-bit HxW or HxWxC image resized to ``size`` (height, width) by Pillow's ``resample``
    filter, as Hugging Face's image processors resize (``BILINEAR``: a triangle filter that widens
    when shrinking, unlike OpenCV's ``INTER_LINEAR``). ImageDecodeError for 16-bit images, which
    Pillow's colour modes cannot hold."""
    from PIL import Image

    if pixels.dtype != np.uint8:
        raise ImageDecodeError(f"input.interpolation pil_{resample.lower()} takes 8-bit images, got {pixels.dtype}")
    filter_ = getattr(Image.Resampling, resample)
    if pixels.ndim == 3 and pixels.shape[2] == 3:  # one RGB image, as Hugging Face passes it
        return np.asarray(Image.fromarray(np.ascontiguousarray(pixels)).resize((size[1], size[0]), filter_))
    # greyscale, or each band alone (Pillow would premultiply an alpha band; bands resample alike)
    bands = pixels.reshape(*pixels.shape[:2], -1)
    resized = [np.asarray(Image.fromarray(np.ascontiguousarray(bands[:, :, band])).resize((size[1], size[0]), filter_))
               for band in range(bands.shape[2])]
    return np.stack(resized, axis=2).reshape(*size, *pixels.shape[2:])


def cpu_only_input_options(spec: InputSpec) -> str | None:
    """The first spec key (dotted) set to a value only this CPU preprocessor implements, or None."""
    normalization = spec.normalization
    if spec.sampling != "half_pixel":
        return f"input.sampling {spec.sampling}"
    if spec.interpolation not in GPU_KERNEL_INTERPOLATIONS:
        return f"input.interpolation {spec.interpolation}"
    if normalization.post_affine is not None:
        return "input.normalization.post_affine"
    if normalization.type == "per_image_standardization" and (
        normalization.statistics_range != "byte" or normalization.reciprocal_std_cap != (1.0, "sqrt_count")
    ):
        return "input.normalization range / reciprocal_std_cap other than byte / TensorFlow's"
    return None


class Preprocessor:
    """Turns source images into network input tensors (batch 1) for one model input.

    The returned tensor is a buffer owned by the preprocessor and overwritten by the next call
    with the same network size; copy it if you need to keep it.
    """

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec
        self._interpolation = INTERPOLATION_FLAGS.get(spec.interpolation, cv2.INTER_LINEAR)
        self._dtype = np.dtype(spec.dtype)
        self._per_image = spec.normalization.type == "per_image_standardization"
        self._scale: npt.NDArray[np.float32] = np.ones(3, np.float32)
        self._offset: npt.NDArray[np.float32] = np.zeros(3, np.float32)
        if not self._per_image:
            self._scale, self._offset = with_post_affine(
                *affine_normalization(spec.normalization), spec.normalization.post_affine
            )
        post = spec.normalization.post_affine
        self._clip = None if post is None else post.clip
        self._buffer: npt.NDArray | None = None
        self._table_key = b""  # scale and offset the normalization table below was made for
        self._table: npt.NDArray = np.empty(0)
        self._maps_key: tuple[tuple[int, int], tuple[int, int]] | None = None  # geometry of the maps below
        self._maps: tuple[npt.NDArray[np.int16], npt.NDArray[np.uint16]] | None = None

    def geometry(self, source_size: tuple[int, int]) -> ResizeGeometry:
        """Where an image of ``source_size`` (height, width) lands in the network input."""
        size = self.spec.size
        keep_aspect = self.spec.resize == "keep_aspect_ratio"
        if isinstance(size, DynamicSize):
            network_size = dynamic_network_size(source_size, size, keep_aspect)
            if max(network_size) > MAX_NETWORK_SIDE:
                raise ImageDecodeError(
                    f"a {source_size[1]}x{source_size[0]} image (width x height) would need a "
                    f"{network_size[1]}x{network_size[0]} network input under input.size, more than "
                    f"{MAX_NETWORK_SIDE} pixels a side (input.size.max_long_side bounds it)"
                )
        else:
            network_size = size
        if keep_aspect:
            return ResizeGeometry.letterbox(source_size, network_size, self.spec.pad_placement)  # type: ignore[arg-type]
        return ResizeGeometry.stretch(source_size, network_size)

    def __call__(self, pixels: npt.NDArray, channel_order: str) -> tuple[npt.NDArray, ResizeGeometry]:
        """Network input tensor for ``pixels`` (HxWxC, or HxW for MONO) and the resize geometry."""
        self.check_image(pixels, channel_order)
        geometry = self.geometry((pixels.shape[0], pixels.shape[1]))
        content_h, content_w = geometry.content_size
        buffer = self._buffer_for(geometry.network_size)
        sampled = self.spec.sampling != "half_pixel"
        if sampled and not self._per_image and pixels.nbytes >= BANDED_REMAP_MIN_BYTES:
            self._remap_and_write_in_bands(pixels, channel_order, geometry, buffer)
            scale, offset = self._scale, self._offset
        else:
            if sampled:
                pixels = resize_with_sampling(pixels, self._sampling_maps_for(geometry))
            elif (content_h, content_w) != geometry.source_size:
                if self.spec.interpolation in PIL_INTERPOLATIONS:
                    pixels = pil_resize(pixels, (content_h, content_w), PIL_INTERPOLATIONS[self.spec.interpolation])
                else:
                    pixels = cv2.resize(pixels, (content_w, content_h), interpolation=self._interpolation)
            image = convert_color(pixels, channel_order, self.spec.color_order)
            scale, offset = self._image_statistics(image) if self._per_image else (self._scale, self._offset)
            self._write(image, self._pixel_scale(scale, image.dtype), offset, buffer, *geometry.offset)
        if geometry.content_size != geometry.network_size:
            pad = np.asarray(self.spec.pad_value, np.float32) * scale + offset
            self._fill_padding(buffer, geometry, pad if self._clip is None else np.clip(pad, *self._clip))
        return buffer, geometry

    @staticmethod
    def _pixel_scale(scale: npt.NDArray[np.float32], dtype: np.dtype) -> npt.NDArray[np.float32]:
        """``scale`` (per 8-bit pixel unit) for pixels of ``dtype``."""
        return scale if dtype == np.uint8 else scale * np.float32(255.0 / _FULL_SCALE[dtype])

    def _remap_and_write_in_bands(
        self,
        pixels: npt.NDArray,
        channel_order: str,
        geometry: ResizeGeometry,
        buffer: npt.NDArray,
    ) -> None:
        """Remap, colour conversion and normalizing write of a large image into ``buffer``, in bands of
        network rows on several cores: each band's pixels stay in its core's cache between the steps,
        and the conversion and the write are split over the cores too. Same bits as the steps done on
        the whole image (every output row depends on its own map rows alone)."""
        maps = self._sampling_maps_for(geometry)
        top, left = geometry.offset
        scale = self._pixel_scale(self._scale, pixels.dtype)
        if pixels.dtype == np.uint8 and self._dtype != np.uint8:
            self._normalization_table(scale, self._offset)  # made here once, only read in the bands

        def band(start: int, stop: int) -> None:
            rows = remap_output_rows(pixels, maps, start, stop)
            image = convert_color(rows, channel_order, self.spec.color_order)
            self._write(image, scale, self._offset, buffer, top + start, left)

        shared_row_bands().run(band, maps[0].shape[0])

    def _sampling_maps_for(self, geometry: ResizeGeometry) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.uint16]]:
        """The remap maps of ``input.sampling`` for this source and content size (the last ones kept)."""
        key = (geometry.source_size, geometry.content_size)
        if self._maps is None or self._maps_key != key:
            self._maps = sampling_maps(geometry.source_size, geometry.content_size, self.spec.sampling)
            self._maps_key = key
        return self._maps

    def check_image(self, pixels: npt.NDArray, channel_order: str) -> None:
        """Raise ImageDecodeError unless ``pixels`` is a non-empty uint8/uint16 image with the channels
        ``channel_order`` names (and 8-bit when the model input is uint8), at most MAX_SAMPLED_SIDE
        pixels a side where ``input.sampling`` needs the remap."""
        if channel_order not in CHANNELS_PER_ORDER:
            raise ImageDecodeError(
                f"unknown channel order {channel_order!r}; expected one of {', '.join(CHANNELS_PER_ORDER)}"
            )
        if not isinstance(pixels, np.ndarray) or pixels.ndim not in (2, 3):
            raise ImageDecodeError(f"image must be an HxWxC numpy array, got {type(pixels).__name__} "
                                   f"with shape {getattr(pixels, 'shape', None)}")
        channels = 1 if pixels.ndim == 2 else pixels.shape[2]
        if channels != CHANNELS_PER_ORDER[channel_order]:
            raise ImageDecodeError(f"image has {channels} channels but channel order {channel_order} "
                                   f"needs {CHANNELS_PER_ORDER[channel_order]}")
        if pixels.dtype not in _FULL_SCALE:
            raise ImageDecodeError(f"image dtype must be uint8 or uint16, got {pixels.dtype}")
        if pixels.dtype != np.uint8 and self._dtype == np.uint8:
            raise ImageDecodeError(f"a {pixels.dtype} image cannot feed a uint8 model input without losing bits")
        if pixels.shape[0] == 0 or pixels.shape[1] == 0:
            raise ImageDecodeError(f"image is empty (shape {pixels.shape})")
        if self.spec.sampling != "half_pixel" and max(pixels.shape[:2]) > MAX_SAMPLED_SIDE:
            raise ImageDecodeError(
                f"image is {pixels.shape[1]}x{pixels.shape[0]}: the resize on the input.sampling "
                f"{self.spec.sampling} grid (OpenCV's fixed-point remap) takes at most {MAX_SAMPLED_SIDE} pixels a side"
            )

    def _buffer_for(self, network_size: tuple[int, int]) -> npt.NDArray:
        height, width = network_size
        shape = (1, 3, height, width) if self.spec.layout == "NCHW" else (1, height, width, 3)
        if self._buffer is None or self._buffer.shape != shape:
            self._buffer = np.empty(shape, self._dtype)
        return self._buffer

    def _content_window(self, buffer: npt.NDArray, top: int, left: int, height: int, width: int) -> list[npt.NDArray]:
        """Per-channel ``h x w`` views (NCHW) or one interleaved ``h x w x 3`` view (NHWC) of the content window."""
        if self.spec.layout == "NCHW":
            return [buffer[0, channel, top : top + height, left : left + width] for channel in range(3)]
        return [buffer[0, top : top + height, left : left + width, :]]

    def _write(
        self,
        image: npt.NDArray,
        scale: npt.NDArray[np.float32],
        offset: npt.NDArray[np.float32],
        buffer: npt.NDArray,
        top: int,
        left: int,
    ) -> None:
        """``buffer[content] = image * scale + offset`` in the buffer's layout and dtype."""
        height, width = image.shape[:2]
        targets = self._content_window(buffer, top, left, height, width)
        nchw = self.spec.layout == "NCHW"
        sources = list(cv2.split(image)) if nchw else [image]
        if self._dtype == np.uint8:
            for source, target in zip(sources, targets):
                np.copyto(target, source)
        elif image.dtype == np.uint8:
            self._write_by_table(sources, targets, scale, offset)
        else:
            self._write_16bit(sources, targets, scale, offset, width)

    def _write_by_table(
        self,
        sources: list[npt.NDArray],
        targets: list[npt.NDArray],
        scale: npt.NDArray[np.float32],
        offset: npt.NDArray[np.float32],
    ) -> None:
        """The normalizing write for 8-bit images as an OpenCV table lookup (one pass, threaded).

        The table holds ``value * scale + offset`` for the 256 values per channel, made with the
        same float32 operations as the direct computation (multiply, then add; one rounding to
        float16), so the tensor has the same bits.
        """
        table = self._normalization_table(scale, offset)
        if self.spec.layout == "NCHW":
            tables = [np.ascontiguousarray(column) for column in table.T]
        elif bool(np.all(table == table[:, :1])):  # the same for every channel: one table, rows as flat lines
            height, width = sources[0].shape[:2]
            sources = [sources[0].reshape(height, width * 3)]
            targets = [targets[0].reshape(height, width * 3)]
            tables = [np.ascontiguousarray(table[:, 0])]
        else:
            tables = [table[None]]
        for source, target, channel_table in zip(sources, targets, tables):
            cv2.LUT(source, channel_table, dst=target)

    def _normalization_table(self, scale: npt.NDArray[np.float32], offset: npt.NDArray[np.float32]) -> npt.NDArray:
        """``value * scale + offset`` (clipped) in the buffer's dtype for the 256 values per channel, kept
        for the next call (constant unless per-image standardization changes it per frame)."""
        key = scale.tobytes() + offset.tobytes()
        if self._table_key != key:
            table = np.arange(256, dtype=np.float32)[:, None] * scale + offset
            if self._clip is not None:
                np.clip(table, *self._clip, out=table)
            self._table = table.astype(self._dtype)
            self._table_key = key
        return self._table

    def _write_16bit(
        self,
        sources: list[npt.NDArray],
        targets: list[npt.NDArray],
        scale: npt.NDArray[np.float32],
        offset: npt.NDArray[np.float32],
        width: int,
    ) -> None:
        """The normalizing write for 16-bit images (too many values for a lookup table)."""
        if self.spec.layout == "NCHW":
            scales, offsets = list(scale), list(offset)
        else:
            sources = [sources[0].reshape(-1, width * 3)]
            targets = [targets[0].reshape(-1, width * 3)]
            uniform = bool(np.all(scale == scale[0]) and np.all(offset == offset[0]))
            scales = [scale[0]] if uniform else [np.tile(scale, width)]
            offsets = [offset[0]] if uniform else [np.tile(offset, width)]
        for source, target, channel_scale, channel_offset in zip(sources, targets, scales, offsets):
            if self._dtype == np.float16:
                target[...] = source * channel_scale + channel_offset  # float32 math, one rounding
            else:
                np.multiply(source, channel_scale, out=target)
                if np.any(channel_offset):
                    np.add(target, channel_offset, out=target)
            if self._clip is not None:
                np.clip(target, *self._clip, out=target)

    def _image_statistics(self, image: npt.NDArray) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """``(scale, offset)`` (for 8-bit pixel units) of ``tf.image.per_image_standardization``
        over the resized image, all pixels and channels: ``(v - mean) * min(1/std, cap)`` with ``v``
        the pixel in the spec's range (0..1 or 0..255) and the spec's cap on ``1/std`` (TensorFlow:
        ``sqrt(N)``), followed by ``post_affine``."""
        normalization = self.spec.normalization
        channel_means, channel_stds = cv2.meanStdDev(image)
        to_8bit = 255.0 / _FULL_SCALE[image.dtype]
        to_range = 1.0 / 255.0 if normalization.statistics_range == "unit" else 1.0
        mean = float(channel_means.mean()) * to_8bit
        variance = float((np.square(channel_stds) + np.square(channel_means)).mean()) * to_8bit**2 - mean**2
        std = math.sqrt(max(variance, 0.0)) * to_range
        factor, of = normalization.reciprocal_std_cap
        cap = factor * (math.sqrt(image.size) if of == "sqrt_count" else image.size)
        reciprocal_std = cap if std * cap <= 1.0 else 1.0 / std
        scale = np.full(3, to_range * reciprocal_std, np.float32)
        offset = np.full(3, -mean * to_range * reciprocal_std, np.float32)
        return with_post_affine(scale, offset, normalization.post_affine)

    def _fill_padding(self, buffer: npt.NDArray, geometry: ResizeGeometry, values: npt.NDArray[np.float32]) -> None:
        """Set everything outside the content window to the normalized pad value."""
        top, left = geometry.offset
        bottom, right = top + geometry.content_size[0], left + geometry.content_size[1]
        image = buffer[0].transpose(1, 2, 0) if self.spec.layout == "NCHW" else buffer[0]
        fill = np.rint(values) if self._dtype == np.uint8 else values
        for region in (image[:top], image[bottom:], image[top:bottom, :left], image[top:bottom, right:]):
            if region.size:
                region[...] = fill
